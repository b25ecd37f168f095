package agent

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/admin"
	"github.com/porthole-dev/porthole/internal/camsim"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway/access"
	"github.com/porthole-dev/porthole/internal/gateway/meter"
)

// TestPortalAndDataAccounting: an agent with a camera (http, mjpeg:) and a
// portal. The phone page shows the camera's snapshot through the relay;
// the bytes are the viewer's in status, the status command's text, the
// status page and /metrics; a daily cap answers 429 and is in usage.json.
func TestPortalAndDataAccounting(t *testing.T) {
	hash, err := access.HashPassword("alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	cam := camsim.New(camsim.Config{FPS: 10, Width: 160, Height: 90})
	srv := httptest.NewServer(cam.Handler())
	t.Cleanup(func() { srv.Close(); cam.Close() })

	token := config.NewToken()
	camPort, portalPort := freePort(t), freePort(t)
	rs := startTestRelay(t, token, config.PortRange{Lo: min(camPort, portalPort), Hi: max(camPort, portalPort)}, nil)
	ac := &config.Agent{
		Relay: &config.AgentRelay{Address: rs.Addr().String(), Token: token},
		Viewers: map[string]config.Viewer{"alice": {PasswordHash: hash, DailyCap: 200_000},
			"bob": {PasswordHash: hash}},
		Services: []config.Service{
			{Name: "yard", Kind: config.KindHTTP, Target: strings.TrimPrefix(srv.URL, "http://"), Port: camPort,
				AllowAny: true, TLS: true, MJPEG: "/stream.mjpg", Snapshot: "/snapshot.jpg", LiveTimeout: time.Minute},
			{Name: "phone", Kind: config.KindPortal, Port: portalPort, AllowAny: true, TLS: true},
		},
	}
	a := startTestAgent(t, Config{Agent: ac})

	client := selfSignedClient(t, ac.StateDir)
	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "https://127.0.0.1:"+strconv.Itoa(int(portalPort))+path, nil)
		req.SetBasicAuth("alice", "alice-pw")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, page := get("/")
	if resp.StatusCode != 200 || !strings.Contains(string(page), `data-snapshot="/cam/yard/snapshot.jpg"`) {
		t.Fatalf("the phone page: %d\n%s", resp.StatusCode, page)
	}
	var got int
	for got < 200_000 {
		resp, b := get("/cam/yard/snapshot.jpg")
		if resp.StatusCode == http.StatusTooManyRequests {
			if !strings.Contains(string(b), "Daily data cap reached") {
				t.Errorf("429 says %q", b)
			}
			break
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/jpeg" {
			t.Fatalf("snapshot through the portal: %d %q", resp.StatusCode, b)
		}
		got += len(b)
	}
	if resp, _ := get("/cam/yard/snapshot.jpg"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("over the cap: %d, want 429", resp.StatusCode)
	}

	var u meter.ViewerUsage
	waitFor(t, "alice's figures in status", func() bool {
		for _, v := range a.Status().Viewers {
			if v.Viewer == "alice" {
				u = v
			}
		}
		return u.BytesOut >= int64(got) && u.Today >= 200_000
	})
	if len(u.Services) != 1 || u.Services[0].Service != "phone" || u.Cap != 200_000 {
		t.Errorf("alice's figures %+v", u)
	}
	var b strings.Builder
	PrintStatus(&b, a.Status(), time.Now())
	for _, want := range []string{"phone: public port " + strconv.Itoa(int(portalPort)) + " -> the phone page (portal, tls)",
		"viewers:  data each viewer moved", "  alice: ", "of 200 kB (CAP REACHED", "by service: phone "} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
	cfg := a.AdminConfig()
	srvAdmin, err := admin.New(admin.Config{Listener: mustListen(t), Status: cfg.Status, Page: cfg.Page, Metrics: cfg.Metrics})
	if err != nil {
		t.Fatal(err)
	}
	h := srvAdmin.Handler()
	srvAdmin.Close()
	for path, wants := range map[string][]string{
		"/metrics": {`porthole_agent_viewer_bytes_total{direction="out",service="phone",viewer="alice"}`,
			`porthole_agent_viewer_bytes_today{viewer="alice"}`, `porthole_agent_viewer_daily_cap_bytes{viewer="alice"} 200000`},
		"/":            {"Viewers&#39; data", "alice", "CAP REACHED"},
		"/status.json": {`"viewers": [`, `"daily_cap": 200000`},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "http://127.0.0.1"+path, nil)
		h.ServeHTTP(rec, req)
		for _, w := range wants {
			if !strings.Contains(rec.Body.String(), w) {
				t.Errorf("%s lacks %s:\n%.3000s", path, w, rec.Body.String())
			}
		}
	}
	// The daily figure is saved for a restart.
	a.web.saveUsage()
	m, err := meter.New(meter.Config{StateDir: ac.StateDir, Caps: map[string]int64{"alice": 200_000}})
	if err != nil {
		t.Fatal(err)
	}
	if over, _ := m.Over("alice"); !over {
		t.Errorf("after a restart alice is under the cap again: %+v", m.Viewer("alice"))
	}
	// The audit log has the cap.
	waitFor(t, "cap_reached in the audit log", func() bool {
		b, _ := os.ReadFile(filepath.Join(ac.StateDir, AuditFile))
		return strings.Contains(string(b), `"msg":"cap_reached"`)
	})
}

func mustListen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// selfSignedClient is an HTTPS client that trusts the agent's self-signed
// certificate in stateDir; its idle connections close with the test.
func selfSignedClient(t *testing.T, stateDir string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(stateDir, "certs", "self-signed.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}
