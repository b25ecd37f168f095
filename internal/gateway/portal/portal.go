// Package portal is the phone page of Porthole (service kind portal): every
// camera a viewer may watch as a tile with a small snapshot refreshed every
// few seconds, a tap for live MJPEG at a data-saving preset, the data used
// in this login session, and RTSP links for camera apps.
//
// A Portal is the Site of an httpgw.Handler, which does the viewer login
// and counts the bytes; the snapshots and streams are served by the camera
// services' own httpgw handlers, called in process (no second login, no
// request to another port), so every camera service's viewers list and the
// viewer's daily cap hold here too.
//
// Paths (behind the login):
//
//	/                         the page (HTML, CSS and JS embedded; no external assets)
//	/portal.css, /portal.js
//	/api/usage                this session's and today's bytes, the cap (JSON)
//	/cam/<name>/snapshot.jpg  ?width=       (as /.porthole/snapshot.jpg)
//	/cam/<name>/mjpeg         ?fps=&width=  (as /.porthole/mjpeg)
package portal

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/porthole-dev/porthole/internal/gateway/httpgw"
	"github.com/porthole-dev/porthole/internal/gateway/meter"
)

// Presets are the live stream's choices on the page, as query strings of
// /cam/<name>/mjpeg. Full is the camera's own size and rate.
var Presets = []Preset{
	{ID: "saver", Label: "Data saver", Detail: "320 px, 2 fps", Query: "width=320&fps=2"},
	{ID: "normal", Label: "Normal", Detail: "640 px, 5 fps", Query: "width=640&fps=5"},
	{ID: "full", Label: "Full", Detail: "camera size and rate", Query: ""},
}

// Preset is one live stream choice.
type Preset struct {
	ID, Label, Detail string
	Query             string // fps= and width= of the stream
}

// TileWidth is the width of the tiles' snapshots.
const TileWidth = 320

// CSP is the page's Content-Security-Policy: its own scripts, styles and
// images only, no frames, forms only to itself.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

//go:embed static
var static embed.FS

var page = template.Must(template.ParseFS(static, "static/page.html"))

// Camera is one camera on the page.
type Camera struct {
	// Name is the camera's service name, shown and used in the URLs.
	// Required, unique.
	Name string
	// Live serves the camera's snapshots and MJPEG (an http service with
	// snapshot: or mjpeg:). Nil = none (an rtsp service: a link only).
	Live *httpgw.Handler
	// RTSPPort is an rtsp service's public port: the page links
	// rtsps://<host>:<port>/<Name> (rtsp:// when RTSPPlain). 0 = no link.
	RTSPPort  uint16
	RTSPPlain bool
	// Viewers may see the camera; nil = every viewer. With Live set, its
	// own list counts too.
	Viewers []string
}

// Config configures a Portal.
type Config struct {
	// Cameras are the tiles, in this order.
	Cameras []Camera
	// Meter gives the figures of /api/usage. Nil = zeros.
	Meter *meter.Meter
	// TileInterval is how often tiles refresh their snapshot. Zero = 5s.
	TileInterval time.Duration
	// UsageInterval is how often the page asks for the figures. Zero = 5s.
	UsageInterval time.Duration
}

// Portal serves the phone page; use it as httpgw.Config.Site.
type Portal struct {
	cfg  Config
	cams map[string]*Camera
	mux  *http.ServeMux
}

// New checks cfg and returns the Portal.
func New(cfg Config) (*Portal, error) {
	if cfg.TileInterval <= 0 {
		cfg.TileInterval = 5 * time.Second
	}
	if cfg.UsageInterval <= 0 {
		cfg.UsageInterval = 5 * time.Second
	}
	p := &Portal{cfg: cfg, cams: map[string]*Camera{}}
	for i := range cfg.Cameras {
		c := &cfg.Cameras[i]
		switch {
		case c.Name == "" || strings.ContainsAny(c.Name, "/?#%\\ "):
			return nil, fmt.Errorf("portal: camera %d: name %q is not a single URL path segment", i, c.Name)
		case p.cams[c.Name] != nil:
			return nil, fmt.Errorf("portal: camera %s listed twice", c.Name)
		}
		p.cams[c.Name] = c
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", p.servePage)
	mux.HandleFunc("GET /portal.css", p.serveStatic)
	mux.HandleFunc("GET /portal.js", p.serveStatic)
	mux.HandleFunc("GET /api/usage", p.serveUsage)
	mux.HandleFunc("GET /cam/{name}/snapshot.jpg", p.serveLive)
	mux.HandleFunc("GET /cam/{name}/mjpeg", p.serveLive)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		text(w, http.StatusNotFound, "Not found: the phone page has no "+r.URL.Path+". Open / for the cameras.")
	})
	p.mux = mux
	return p, nil
}

// ServeHTTP serves a request that httpgw's login let through.
func (p *Portal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := httpgw.ViewerOf(r); !ok {
		text(w, http.StatusInternalServerError, "no viewer: the portal must be served behind httpgw's login")
		return
	}
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		text(w, http.StatusMethodNotAllowed, r.Method+" is not used here.")
		return
	}
	p.mux.ServeHTTP(w, r)
}

// visible is whether viewer may see c.
func (c *Camera) visible(viewer string) bool {
	if c.Viewers != nil && !slices.Contains(c.Viewers, viewer) {
		return false
	}
	return c.Live == nil || c.Live.Allowed(viewer)
}

// tile is a camera as the page template sees it.
type tile struct {
	Name               string
	Snapshot, MJPEG    string // paths, "" = none
	RTSP               string // the app link, "" = none
	LiveTimeoutSeconds int
}

type pageData struct {
	Viewer        string
	Tiles         []tile
	Presets       []Preset
	TileWidth     int
	TileMillis    int64
	UsageMillis   int64
	NoCameraNotes bool
}

func (p *Portal) servePage(w http.ResponseWriter, r *http.Request) {
	viewer, _, _ := httpgw.ViewerOf(r)
	d := pageData{Viewer: viewer, Presets: Presets, TileWidth: TileWidth,
		TileMillis: p.cfg.TileInterval.Milliseconds(), UsageMillis: p.cfg.UsageInterval.Milliseconds()}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	for i := range p.cfg.Cameras {
		c := &p.cfg.Cameras[i]
		if !c.visible(viewer) {
			continue
		}
		t := tile{Name: c.Name}
		base := "/cam/" + url.PathEscape(c.Name) + "/"
		if c.Live != nil {
			snap, mjpeg := c.Live.HasLive()
			if snap {
				t.Snapshot = base + "snapshot.jpg"
			}
			if mjpeg {
				t.MJPEG = base + "mjpeg"
			}
			t.LiveTimeoutSeconds = int(c.Live.LiveTimeout().Seconds())
		}
		if c.RTSPPort != 0 {
			scheme := "rtsps"
			if c.RTSPPlain {
				scheme = "rtsp"
			}
			t.RTSP = fmt.Sprintf("%s://%s:%d/%s", scheme, host, c.RTSPPort, url.PathEscape(c.Name))
		}
		d.Tiles = append(d.Tiles, t)
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Content-Security-Policy", CSP)
	if err := page.Execute(w, d); err != nil && !errors.Is(err, http.ErrHandlerTimeout) {
		return // the viewer left mid-page
	}
}

func (p *Portal) serveStatic(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	b, err := static.ReadFile("static/" + name)
	if err != nil {
		text(w, http.StatusNotFound, "Not found.")
		return
	}
	hd := w.Header()
	if strings.HasSuffix(name, ".css") {
		hd.Set("Content-Type", "text/css; charset=utf-8")
	} else {
		hd.Set("Content-Type", "text/javascript; charset=utf-8")
	}
	hd.Set("Cache-Control", "no-cache")
	hd.Set("Content-Security-Policy", CSP)
	w.Write(b)
}

// Usage is /api/usage: the viewer's figures in bytes (both directions).
type Usage struct {
	Viewer string `json:"viewer"`
	// Session is what this login session moved, on every page of the portal.
	Session int64 `json:"session"`
	// Today is what the viewer moved since local midnight, every service.
	Today int64 `json:"today"`
	// Cap is the viewer's daily cap; 0 = none.
	Cap      int64     `json:"daily_cap"`
	ResetsAt time.Time `json:"resets_at"`
	OverCap  bool      `json:"over_cap"`
}

func (p *Portal) serveUsage(w http.ResponseWriter, r *http.Request) {
	viewer, session, _ := httpgw.ViewerOf(r)
	vu := p.cfg.Meter.Viewer(viewer)
	over, _ := p.cfg.Meter.Over(viewer)
	u := Usage{Viewer: viewer, Session: p.cfg.Meter.Session(session), Today: vu.Today, Cap: vu.Cap,
		ResetsAt: vu.ResetsAt, OverCap: over}
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(u)
}

func (p *Portal) serveLive(w http.ResponseWriter, r *http.Request) {
	viewer, _, _ := httpgw.ViewerOf(r)
	name := r.PathValue("name")
	c := p.cams[name]
	// A camera the viewer may not see is answered as one that does not exist.
	if c == nil || !c.visible(viewer) {
		text(w, http.StatusNotFound, fmt.Sprintf("No camera %q here: open / for the cameras you may watch.", name))
		return
	}
	if c.Live == nil {
		text(w, http.StatusNotFound, fmt.Sprintf("%s has no snapshot or MJPEG stream: watch it with its RTSP link in a camera app.", name))
		return
	}
	c.Live.ServeLive(w, r, strings.HasSuffix(r.URL.Path, "/mjpeg"))
}

func text(w http.ResponseWriter, status int, msg string) {
	hd := w.Header()
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}
