package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"time"
)

// Level colours a line of the status page.
type Level int

// Levels, from plain to alarming.
const (
	Info Level = iota
	OK
	Warn
	Bad
)

func (l Level) class() string {
	switch l {
	case OK:
		return "ok"
	case Warn:
		return "warn"
	case Bad:
		return "bad"
	}
	return ""
}

// Page is what the status page shows: a headline and sections of key/value rows.
// Daemons build it from their status; the package renders it.
type Page struct {
	// Title names the daemon, e.g. "porthole-agent home".
	Title string
	// Headline sums the state up in one line ("3 of 3 services up, via the relay").
	Headline string
	Level    Level
	Sections []Section
}

// Section is a titled group of rows, e.g. one service.
type Section struct {
	Title string
	Level Level // of the title
	Rows  []Row
}

// Row is one key/value line.
type Row struct {
	Key, Value string
	Level      Level
}

// The page is plain HTML: one column, large enough text, no scripts (the CSP
// forbids them), so it reads on a 360 px phone screen and in a text browser.
var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"class": Level.class,
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="10">
<title>{{.Title}}</title>
<style>
body{font:16px/1.4 system-ui,sans-serif;margin:0 auto;padding:8px;max-width:40em;color:#222;background:#fff}
h1{font-size:1.2em;margin:.2em 0}
h2{font-size:1.05em;margin:1em 0 .2em;border-bottom:1px solid #ddd}
.head{padding:.5em;border-radius:4px;background:#eee}
dl{margin:0;display:grid;grid-template-columns:minmax(6em,auto) 1fr;gap:.1em .6em}
dt{color:#666}dd{margin:0;overflow-wrap:anywhere;white-space:pre-wrap}
.ok{color:#060}.warn{color:#950}.bad{color:#b00;font-weight:bold}
.head.ok{background:#e6f4e6}.head.warn{background:#fdf3d8}.head.bad{background:#fbe3e3}
footer{margin-top:1em;color:#888;font-size:.85em}
@media (prefers-color-scheme:dark){body{background:#111;color:#ddd}.head{background:#333}dt{color:#999}
.head.ok{background:#143014}.head.warn{background:#3a3010}.head.bad{background:#3c1414}.ok{color:#6c6}.warn{color:#db6}.bad{color:#f77}}
</style></head>
<body>
<h1>{{.Title}}</h1>
{{if .Headline}}<p class="head {{class .Level}}">{{.Headline}}</p>{{end}}
{{range .Sections}}<h2 class="{{class .Level}}">{{.Title}}</h2>
<dl>{{range .Rows}}<dt>{{.Key}}</dt><dd class="{{class .Level}}">{{.Value}}</dd>{{end}}</dl>
{{end}}
<footer>{{.Now}} · <a href="status.json">status.json</a> · <a href="metrics">metrics</a> · refreshes every 10 s</footer>
</body></html>
`))

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	var p Page
	if s.cfg.Page != nil {
		p = s.cfg.Page()
	} else {
		b, _ := json.MarshalIndent(s.cfg.Status(), "", "  ")
		p = Page{Title: "status", Sections: []Section{{Title: "status.json", Rows: []Row{{Key: "", Value: string(b)}}}}}
	}
	var buf bytes.Buffer
	err := pageTmpl.Execute(&buf, struct {
		Page
		Now string
	}{p, time.Now().Format("2006-01-02 15:04:05 MST")})
	if err != nil {
		s.log.Warn("admin: rendering the status page", "err", err)
		http.Error(w, "cannot render the status page", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.Write(buf.Bytes())
}

// FormatBytes writes a byte count for people: 999 B, 1.2 kB, 3.4 MB (SI units).
func FormatBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}
