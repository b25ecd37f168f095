package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

type testStatus struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

func newTest(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Listener == nil && cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// get runs one request through the handler and returns status and body.
func get(t *testing.T, h http.Handler, method, target, host string) (int, http.Header, string) {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	r.Host = host
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code, w.Header(), w.Body.String()
}

func TestEndpoints(t *testing.T) {
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "porthole_test_things", Help: "Things."})
	gauge.Set(3)
	var n atomic.Int64
	s := newTest(t, Config{
		Status: func() any { return testStatus{Name: "home", Count: int(n.Add(1))} },
		Page: func() Page {
			return Page{Title: "porthole-test home", Headline: "all good <b>", Level: OK,
				Sections: []Section{{Title: "frontdoor", Rows: []Row{{Key: "viewers", Value: "2"}, {Key: "camera", Value: "refused", Level: Bad}}}}}
		},
		Metrics: NewRegistry(gauge),
	})
	h := s.Handler()
	const host = "127.0.0.1:7480"

	code, hdr, body := get(t, h, "GET", "/status.json", host)
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("status.json: %d %s", code, hdr.Get("Content-Type"))
	}
	var st testStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Name != "home" || st.Count != 1 {
		t.Fatalf("status.json body %q: %+v %v", body, st, err)
	}

	code, hdr, body = get(t, h, "GET", "/", host)
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
		t.Fatalf("page: %d %s", code, hdr.Get("Content-Type"))
	}
	for _, want := range []string{`name="viewport"`, "porthole-test home", "all good &lt;b&gt;", "<dt>viewers</dt>", `class="bad">refused`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<script") {
		t.Error("page has a script")
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("page CSP %q", csp)
	}

	code, _, body = get(t, h, "GET", "/metrics", host)
	if code != 200 || !strings.Contains(body, "porthole_test_things 3") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("metrics: %d\n%s", code, body)
	}
	code, _, body = get(t, h, "GET", "/healthz", host)
	if code != 200 || body != "ok\n" {
		t.Errorf("healthz: %d %q", code, body)
	}
	if code, _, _ = get(t, h, "GET", "/nothing", host); code != 404 {
		t.Errorf("unknown path: %d, want 404", code)
	}
}

func TestHealthz(t *testing.T) {
	var sick atomic.Bool
	s := newTest(t, Config{
		Status: func() any { return nil },
		Health: func() error {
			if sick.Load() {
				return errors.New("path loop last ran 20m ago")
			}
			return nil
		},
	})
	h := s.Handler()
	if code, _, _ := get(t, h, "GET", "/healthz", "localhost:7480"); code != 200 {
		t.Fatalf("healthy: %d", code)
	}
	sick.Store(true)
	code, _, body := get(t, h, "GET", "/healthz", "localhost:7480")
	if code != 503 || !strings.Contains(body, "path loop last ran 20m ago") {
		t.Fatalf("sick: %d %q", code, body)
	}
	if code, _, _ := get(t, h, "GET", "/metrics", "localhost"); code != 404 {
		t.Errorf("metrics without a gatherer: %d, want 404", code)
	}
}

func TestGuard(t *testing.T) {
	s := newTest(t, Config{Status: func() any { return testStatus{Name: "x"} }})
	h := s.Handler()
	for _, tc := range []struct {
		method, host string
		want         int
	}{
		{"GET", "127.0.0.1:7480", 200},
		{"HEAD", "127.0.0.1:7480", 200},
		{"GET", "[::1]:7480", 200},
		{"GET", "localhost:7480", 200},
		{"GET", "LOCALHOST", 200},
		{"GET", "192.168.1.5:7480", 200},
		{"GET", "evil.example:7480", 403}, // DNS rebinding
		{"GET", "127.0.0.1.nip.io:7480", 403},
		{"POST", "127.0.0.1:7480", 405},
		{"DELETE", "127.0.0.1:7480", 405},
	} {
		if code, _, _ := get(t, h, tc.method, "/status.json", tc.host); code != tc.want {
			t.Errorf("%s Host %s: %d, want %d", tc.method, tc.host, code, tc.want)
		}
	}
}

func TestRunServesAndStops(t *testing.T) {
	s := newTest(t, Config{Status: func() any { return testStatus{Name: "live"} }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	resp, err := http.Get("http://" + s.Addr().String() + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"live"`) {
		t.Fatalf("body %s", b)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := net.Dial("tcp", s.Addr().String()); err == nil {
		t.Error("still listening after Run returned")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(Config{Addr: "127.0.0.1:0"}); !errors.Is(err, ErrNoStatus) {
		t.Errorf("no Status: %v", err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if _, err := New(Config{Addr: taken.Addr().String(), Status: func() any { return nil }}); err == nil {
		t.Error("bound a taken address")
	}
}
