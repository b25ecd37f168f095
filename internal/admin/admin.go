package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures a Server.
type Config struct {
	// Addr is the TCP address to listen on, e.g. "127.0.0.1:7480". Ignored when
	// Listener is set; one of the two is required.
	Addr string
	// Listener is an already-bound listener to serve (tests); nil = listen on Addr.
	Listener net.Listener
	// Status returns the daemon's status; /status.json is its JSON encoding.
	// Required. It must be cheap and must never hold a secret.
	Status func() any
	// Page renders the status page. Nil shows the JSON status in a page.
	Page func() Page
	// Health reports why the daemon is not healthy, nil when it is. Nil means
	// healthy whenever the server answers.
	Health func() error
	// Metrics is served on /metrics. Nil answers 404 there.
	Metrics prometheus.Gatherer
	// Logger; nil discards.
	Logger *slog.Logger
}

// ErrNoStatus is returned by New when Config.Status is nil.
var ErrNoStatus = errors.New("admin: Config.Status is required")

// Server is a running admin endpoint.
type Server struct {
	cfg Config
	ln  net.Listener
	srv *http.Server
	log *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

// New binds the listener (so a taken address is reported at start) and builds
// the handlers; Run serves.
func New(cfg Config) (*Server, error) {
	if cfg.Status == nil {
		return nil, ErrNoStatus
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("admin listener: %w", err)
		}
	}
	s := &Server{cfg: cfg, ln: ln, log: cfg.Logger}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run serves until ctx ends or Close is called.
func (s *Server) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	s.log.Info("admin endpoint", "url", "http://"+s.ln.Addr().String()+"/")
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}

// Close stops the server and its connections. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.srv.Close()
		s.ln.Close() // when Run was never called
	})
	return s.closeErr
}

// Handler is the endpoints' handler, for tests and for embedding.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", s.page)
	mux.HandleFunc("/status.json", s.statusJSON)
	mux.HandleFunc("/healthz", s.healthz)
	if s.cfg.Metrics != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(s.cfg.Metrics, promhttp.HandlerOpts{
			ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		}))
	}
	return guard(mux)
}

// guard refuses what the admin endpoint never needs: methods other than GET and
// HEAD, and Host names other than an IP address or localhost. The second stops a
// web page the user visits from reading the status through DNS rebinding (its
// own name resolving to 127.0.0.1).
func guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		h.Set("Referrer-Policy", "no-referrer")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if !localHost(r.Host) {
			http.Error(w, "forbidden: open the admin page by its IP address (e.g. http://127.0.0.1:7480/) or localhost", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// localHost reports whether a Host header names the server by IP or localhost.
func localHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}

func (s *Server) statusJSON(w http.ResponseWriter, r *http.Request) {
	b, err := json.MarshalIndent(s.cfg.Status(), "", "  ")
	if err != nil {
		s.log.Warn("admin: encoding status", "err", err)
		http.Error(w, "cannot encode status", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.cfg.Health != nil {
		if err := s.cfg.Health(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "unhealthy: %s\n", err)
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

// NewRegistry is a metrics registry with the Go runtime and process collectors
// (memory, goroutines, file descriptors) and the daemon's own collectors.
func NewRegistry(cs ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(cs...)
	return reg
}
