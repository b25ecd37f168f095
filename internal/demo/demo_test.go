package demo

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent/portmap"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/test/fakerouter"
	"github.com/porthole-dev/porthole/test/framework"
)

func freePort(t *testing.T) uint16 {
	// From below the ephemeral range: a port the kernel handed out (":0") was
	// sometimes taken by another test's outgoing connection before the demo's
	// relay bound it, and ffprobe then met that connection, not the relay
	// ("An unexpected TLS packet was received", in CI).
	return uint16(framework.Port(t, "tcp"))
}

// printed is what the demo printed.
type printed struct {
	lines []string
	// URL is the first https:// line (through the relay), Direct the second
	// (the agent's own listener, with Options.Direct), Portal the phone
	// page's (after its "On a phone" line).
	URL, Direct, Portal string
	// RTSP is the first rtsps:// line (through the relay), RTSPDirect the
	// second (the agent's own listener).
	RTSP, RTSPDirect      string
	Viewer, Password, Fpr string
}

// directAddr is where tests open the agent's direct listener: 127.0.0.1 is the
// relay's, and both listen on the same port numbers.
var directAddr = netip.MustParseAddr("127.0.0.2")

// startDemo runs the demo with its web page on httpPort until the test ends
// and returns what it printed up to "Press Ctrl-C". With direct, the agent
// also listens on directAddr and maps its ports on a fake router.
func startDemo(t *testing.T, httpPort uint16, direct bool) printed {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	opt := Options{HTTPPort: httpPort, RTSPPort: freePort(t), PortalPort: freePort(t)}
	if direct {
		r, err := fakerouter.New(fakerouter.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		opt.Direct = &Direct{Listen: directAddr, Portmap: portmap.Config{
			Gateway:    func() (netip.Addr, error) { return r.PMPAddr().Addr(), nil },
			Protocols:  []string{"natpmp"},
			NATPMPPort: r.PMPAddr().Port(),
		}}
	}
	go func() { done <- Run(ctx, pw, opt); pw.Close() }()
	t.Cleanup(func() { cancel(); <-done })
	var p printed
	lines := bufio.NewScanner(pr)
	for lines.Scan() {
		l := lines.Text()
		p.lines = append(p.lines, l)
		phone := len(p.lines) > 1 && strings.HasPrefix(p.lines[len(p.lines)-2], "On a phone")
		switch {
		case strings.HasPrefix(l, "https://") && phone:
			p.Portal = l
		case strings.HasPrefix(l, "https://") && p.URL == "":
			p.URL = l
		case strings.HasPrefix(l, "https://"):
			p.Direct = l
		case strings.HasPrefix(l, "rtsps://") && p.RTSP == "":
			p.RTSP = l
		case strings.HasPrefix(l, "rtsps://"):
			p.RTSPDirect = l
		case strings.HasPrefix(l, "viewer: "):
			p.Viewer = strings.TrimPrefix(l, "viewer: ")
		case strings.HasPrefix(l, "password: "):
			p.Password = strings.TrimPrefix(l, "password: ")
		case strings.HasPrefix(l, "fingerprint: "):
			p.Fpr = strings.TrimPrefix(l, "fingerprint: ")
		}
		if strings.HasPrefix(l, "Press Ctrl-C") {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if p.URL == "" || p.Viewer == "" || p.Password == "" || p.Fpr == "" {
		t.Fatalf("demo printed no https:// URL, viewer, password or fingerprint:\n%s", strings.Join(p.lines, "\n"))
	}
	return p
}

// client is a browser-like HTTPS client that trusts exactly the certificate
// whose fingerprint the demo printed, and follows no redirect by itself.
func (p printed) client(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{
		Timeout: 10 * time.Second,
		Jar:     jar,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, // self-signed: checked by fingerprint below
			VerifyConnection: func(cs tls.ConnectionState) error {
				sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
				if got := strings.ReplaceAll(fmt.Sprintf("% X", sum[:]), " ", ":"); got != p.Fpr {
					return fmt.Errorf("certificate fingerprint %s, the demo printed %s", got, p.Fpr)
				}
				return nil
			},
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func TestDemoPrintsURLsAndViewer(t *testing.T) {
	port := freePort(t)
	p := startDemo(t, port, false)
	if want := fmt.Sprintf("https://127.0.0.1:%d/", port); p.URL != want {
		t.Errorf("URL %q, want %q", p.URL, want)
	}
	if p.Viewer != Viewer || len(p.Password) < 12 {
		t.Errorf("viewer %q password %q: want %q and a password of 12 characters or more", p.Viewer, p.Password, Viewer)
	}
	if !strings.HasPrefix(p.RTSP, "rtsps://127.0.0.1:") || !strings.HasSuffix(p.RTSP, "/"+RTSPService) {
		t.Errorf("no rtsps://127.0.0.1:port/%s line in\n%s", RTSPService, strings.Join(p.lines, "\n"))
	}
	if !strings.HasPrefix(p.Portal, "https://127.0.0.1:") || p.Portal == p.URL {
		t.Errorf("no phone page https:// line in\n%s", strings.Join(p.lines, "\n"))
	}
	for _, l := range p.lines {
		if strings.Contains(l, "://") && !strings.HasPrefix(l, "https://") && !strings.HasPrefix(l, "rtsps://") {
			t.Errorf("a URL not alone at the start of its line: %q", l)
		}
	}
	// A second demo gets another password: nobody can guess it from the README.
	q := startDemo(t, freePort(t), false)
	if q.Password == p.Password {
		t.Errorf("two demos printed the same password %q", p.Password)
	}
}

// login logs c in at base with name and password as the login form does and
// returns the answer (a 303 with the session cookie when it worked).
func login(t *testing.T, c *http.Client, base, name, password string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+".porthole/login",
		strings.NewReader(url.Values{"name": {name}, "password": {password}, "next": {"/"}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", strings.TrimSuffix(base, "/"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// checkLoggedIn checks what a viewer without a login gets at base, then logs
// in with the printed viewer and reads the page and a frame of its MJPEG.
func checkLoggedIn(t *testing.T, p printed, base string) {
	c := p.client(t)
	get := func(path, accept string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("Accept", accept)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	// No login: a browser goes to the login page; a player gets Porthole's
	// Basic challenge, never the camera's Digest one.
	resp := get("", "text/html")
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/.porthole/login") {
		t.Fatalf("without login: %s, Location %q; want 303 to /.porthole/login", resp.Status, loc)
	}
	resp = get("stream.mjpg", "*/*")
	resp.Body.Close()
	if ch := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized ||
		!strings.HasPrefix(ch, `Basic realm="Porthole`) || strings.Contains(strings.ToLower(ch), "digest") {
		t.Fatalf("stream without login: %s, WWW-Authenticate %q; want 401 with Porthole's Basic realm", resp.Status, ch)
	}

	if resp := login(t, c, base, p.Viewer, p.Password+"x"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("login with a wrong password: %s, want 401", resp.Status)
	}
	if resp := login(t, c, base, p.Viewer, p.Password); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s, want 303", resp.Status)
	}

	resp = get("", "text/html")
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "stream.mjpg") {
		t.Fatalf("page behind the login: %s, no MJPEG stream: %s", resp.Status, page)
	}
	resp = get("stream.mjpg", "*/*")
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "multipart/x-mixed-replace") {
		t.Fatalf("stream: %s, content type %q", resp.Status, ct)
	}
	buf := make([]byte, 64<<10)
	n, _ := io.ReadAtLeast(resp.Body, buf, 4096)
	if !strings.Contains(string(buf[:n]), "\xff\xd8") {
		t.Fatalf("no JPEG frame in the first %d bytes of the stream", n)
	}
}

// checkRedirect checks that plain http:// on the https port is sent to https.
func checkRedirect(t *testing.T, httpsURL string) {
	plain := "http://" + strings.TrimPrefix(httpsURL, "https://")
	c := &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(plain + "stream.mjpg?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusPermanentRedirect || loc != httpsURL+"stream.mjpg?x=1" {
		t.Fatalf("plain %s: %s, Location %q; want 308 to %sstream.mjpg?x=1", plain, resp.Status, loc, httpsURL)
	}
}

// TestDemoLoginThroughRelay logs in at the printed URL and reads the camera's
// MJPEG, which travels through the relay and the tunnel inside TLS that ends
// at the agent; the camera's own Digest login is the agent's business.
func TestDemoLoginThroughRelay(t *testing.T) {
	p := startDemo(t, freePort(t), false)
	checkLoggedIn(t, p, p.URL)
	checkRedirect(t, p.URL)
}

// TestDemoLoginDirect does the same at the agent's own listener, which a
// (fake) router forwards to on the direct path.
func TestDemoLoginDirect(t *testing.T) {
	port := freePort(t)
	p := startDemo(t, port, true)
	if want := fmt.Sprintf("https://%s/", netip.AddrPortFrom(directAddr, port)); p.Direct != want {
		t.Fatalf("direct URL %q, want %q", p.Direct, want)
	}
	checkLoggedIn(t, p, p.Direct)
	checkRedirect(t, p.Direct)
}

func TestDirectNeedsAFakeRouter(t *testing.T) {
	err := Run(context.Background(), io.Discard, Options{Direct: &Direct{Listen: directAddr}})
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("Run with Direct and no Portmap.Gateway: %v, want an error", err)
	}
}

// The URL make demo prints must open in a browser: Chrome and Firefox refuse some
// ports outright (10080 was the demo's first choice and failed with ERR_UNSAFE_PORT).
func TestDefaultPortsOpenInBrowsers(t *testing.T) {
	if config.BrowserBlocked(DefaultHTTPPort) {
		t.Errorf("DefaultHTTPPort %d is on browsers' unsafe-port list", DefaultHTTPPort)
	}
	if config.BrowserBlocked(DefaultPortalPort) {
		t.Errorf("DefaultPortalPort %d is on browsers' unsafe-port list", DefaultPortalPort)
	}
	if !config.BrowserBlocked(10080) {
		t.Error("BrowserBlocked(10080) = false; the list is wrong")
	}
}
