package httpgw

import (
	"html/template"
	"net/http"
	"strings"
)

const style = `body{margin:0;font-family:system-ui,sans-serif;background:#f4f4f6;color:#222}
main{max-width:22em;margin:12vh auto;padding:1.5em;background:#fff;border-radius:.6em;box-shadow:0 1px 4px #0002}
h1{font-size:1.25em;margin:0 0 .8em}label{display:block;margin:.7em 0 .2em}
input{width:100%;box-sizing:border-box;font-size:1.1em;padding:.45em;border:1px solid #bbb;border-radius:.3em}
button{margin-top:1.1em;width:100%;font-size:1.1em;padding:.55em;border:0;border-radius:.3em;background:#2563eb;color:#fff}
.err{color:#b00020;margin:.5em 0}p{line-height:1.4}a{color:#2563eb}`

var pages = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Porthole: {{.Service}}</title><style>` + style + `</style></head>
<body><main><h1>{{.Service}}</h1>
{{if .Error}}<p class="err" role="alert">{{.Error}}</p>{{end}}
<form method="post" action="/.porthole/login">
<input type="hidden" name="next" value="{{.Next}}">
<label for="name">Name</label><input id="name" name="name" autocomplete="username" autocapitalize="none" value="{{.Name}}" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Log in</button>
</form></main></body></html>
`))

var _ = template.Must(pages.New("message").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Porthole: {{.Title}}</title><style>` + style + `</style></head>
<body><main><h1>{{.Title}}</h1><p>{{.Message}}</p>
{{if .Logout}}<form method="post" action="/.porthole/logout"><button type="submit">Log out</button></form>{{end}}
{{if .Login}}<p><a href="/.porthole/login">Log in</a></p>{{end}}
</main></body></html>
`))

type loginData struct {
	Service, Next, Name, Error string
}

type messageData struct {
	Title, Message string
	Login, Logout  bool
}

// wantsHTML reports whether the client is a browser that should get pages
// and the login form rather than text and a Basic challenge.
func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// page answers with a small HTML page for browsers, text for the others.
func (h *Handler) page(w http.ResponseWriter, r *http.Request, status int, d messageData) {
	hd := w.Header()
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	if !wantsHTML(r) {
		hd.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(d.Title + ": " + d.Message + "\n"))
		return
	}
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	_ = pages.ExecuteTemplate(w, "message", d)
}

// loginForm answers with the login form.
func (h *Handler) loginForm(w http.ResponseWriter, status int, d loginData) {
	d.Service = h.cfg.Service
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = pages.ExecuteTemplate(w, "login", d)
}
