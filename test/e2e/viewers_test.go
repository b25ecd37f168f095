package e2e

// Issue 8 on the real binaries: viewers log in to Porthole over HTTPS that
// ends at the agent; the camera's own (Digest) login is used only by the
// agent. Every check runs through the relay and, where it matters, through
// the agent's direct listener too (bound to its own loopback address, no
// router: the port mapping fails and the listener serves anyway).
//
// Lockout is per source address, so each check that fails logins uses a
// loopback address of its own (127.0.0.x) and cannot lock out another.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/camsim"
	"github.com/porthole-dev/porthole/internal/gateway/access"
	"github.com/porthole-dev/porthole/test/framework"
)

const (
	alicePass  = "alice-viewer-pass-7Qx"
	bobPass    = "bob-viewer-pass-3Kd"
	cameraUser = "admin"
	cameraPass = "camera-secret-9Zt"
	// directIP is where the agent's direct listeners bind; the relay's
	// service listeners are on 127.0.0.1, same port numbers.
	directIP = "127.0.0.4"
)

// viewerHashes are alice's and bob's password hashes, made once per process
// (argon2id takes a while under -race).
var viewerHashes = sync.OnceValues(func() ([2]string, error) {
	a, err := access.HashPassword(alicePass)
	if err != nil {
		return [2]string{}, err
	}
	b, err := access.HashPassword(bobPass)
	return [2]string{a, b}, err
})

// webEnv is a relay and an agent with http services in front of a camsim
// camera that wants Digest auth:
//
//	cam     the camera, camera_login right, viewers [alice]
//	badcam  the camera, camera_login with a wrong password
//	offcam  an address where nothing listens
type webEnv struct {
	t             *testing.T
	relay, agent  *Process
	agentCfg      string
	stateDir      string
	relayStateDir string
	ports         map[string]int
	roots         *x509.CertPool
	caFile        string
	camera        *framework.Camera
}

// webOpts are the variations of startWeb.
type webOpts struct {
	// direct adds the agent's direct listeners (on directIP).
	direct bool
	// firstByte is cam's first_byte_timeout (the TLS handshake's deadline);
	// empty: the default (10 s). Small values make loaded test machines
	// reset viewers whose handshake is merely slow.
	firstByte string
}

// startWeb starts the camera, the relay and the agent, and waits until the
// agent's self-signed certificate exists and cam answers through the relay.
func startWeb(t *testing.T, o webOpts) *webEnv {
	t.Helper()
	hashes, err := viewerHashes()
	if err != nil {
		t.Fatal(err)
	}
	cam := framework.StartCamera(t, camsim.Config{Auth: "digest", Username: cameraUser, Password: cameraPass, FPS: 20, Width: 160, Height: 120})
	ps, lo, hi := servicePorts(t, 3)
	tok := strongToken()
	e := newEnv(t, agentEntry{Name: "home", Token: tok, Lo: lo, Hi: hi})
	w := &webEnv{t: t, relayStateDir: e.stateDir, camera: cam,
		ports: map[string]int{"cam": ps[0], "badcam": ps[1], "offcam": ps[2]}}
	w.relay = e.startRelay()

	good := writeFile(t, e.dir, "cam.pass", cameraPass+"\n")
	bad := writeFile(t, e.dir, "badcam.pass", "not-the-camera-password\n")
	w.stateDir = filepath.Join(e.dir, "agent-state")
	ac := framework.AgentConfig{Name: "home", StateDir: w.stateDir, Relay: framework.Addr(e.udp), Token: tok, Direct: o.direct,
		Extra: fmt.Sprintf("viewers:\n  alice: {password_hash: %q}\n  bob: {password_hash: %q}\n"+
			"publicip:\n  sources: [relay]\n  min_agree: 1\n", hashes[0], hashes[1]),
		Services: []framework.Service{
			{Name: "cam", Kind: "http", Target: cam.HTTPAddr, Port: ps[0],
				Extra: fmt.Sprintf("viewers: [alice]\ncamera_login: {username: %s, password_file: %s}\n", cameraUser, good)},
			{Name: "badcam", Kind: "http", Target: cam.HTTPAddr, Port: ps[1],
				Extra: fmt.Sprintf("camera_login: {username: %s, password_file: %s}\n", cameraUser, bad)},
			{Name: "offcam", Kind: "http", Target: refusingAddr(t), Port: ps[2]},
		}}
	if o.firstByte != "" {
		ac.Services[0].Extra += "first_byte_timeout: " + o.firstByte + "\n"
	}
	if o.direct {
		ac.Extra += "direct:\n  listen: " + directIP + "\n  protocols: [natpmp]\n  gateway: 127.0.0.1\n"
	}
	w.agentCfg = writeFile(t, e.dir, "agent.yaml", ac.YAML())
	w.agent = e.startAgent("agent", w.agentCfg)
	w.agent.WaitLog("tunnel up", 10*time.Second)

	w.caFile = filepath.Join(w.stateDir, "certs", "self-signed.crt")
	eventually(t, 10*time.Second, func() bool { return fileExists(w.caFile) }, "no %s", w.caFile)
	pem, err := os.ReadFile(w.caFile)
	if err != nil {
		t.Fatal(err)
	}
	w.roots = x509.NewCertPool()
	if !w.roots.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", w.caFile)
	}
	// The relay's listener for cam is up once an unauthenticated request
	// gets Porthole's 401.
	c := w.client("127.0.0.1", "127.0.0.1")
	eventually(t, 10*time.Second, func() bool {
		resp, err := c.get(w.url("cam", "/"), nil)
		return err == nil && resp.StatusCode == http.StatusUnauthorized
	}, "cam does not answer through the relay")
	if o.direct {
		c := w.client(directIP, "127.0.0.1")
		eventually(t, 10*time.Second, func() bool {
			resp, err := c.get(w.url("cam", "/"), nil)
			return err == nil && resp.StatusCode == http.StatusUnauthorized
		}, "cam does not answer on the direct listener")
	}
	return w
}

// url is https://localhost:<port of svc><path>: the self-signed certificate
// names localhost.
func (w *webEnv) url(svc, path string) string {
	return "https://localhost:" + strconv.Itoa(w.ports[svc]) + path
}

// viewerClient is an HTTPS client that dials one server address (the relay
// or the direct listener: an IP, the port is the URL's; or a host:port, a
// proxy) from one source address, trusts only the agent's certificate and
// follows no redirects.
type viewerClient struct {
	*http.Client
	to, from string
}

func (w *webEnv) client(to, from string) *viewerClient {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if _, _, err := net.SplitHostPort(to); err == nil {
				return d.DialContext(ctx, network, to) // a proxy's host:port
			}
			_, port, _ := net.SplitHostPort(addr)
			return d.DialContext(ctx, network, net.JoinHostPort(to, port))
		},
		TLSClientConfig:     &tls.Config{RootCAs: w.roots},
		MaxIdleConnsPerHost: 16,
	}
	w.t.Cleanup(tr.CloseIdleConnections)
	return &viewerClient{to: to, from: from, Client: &http.Client{Transport: tr, Timeout: 15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// get sends a GET with the headers hdr and returns the response with its
// body read (a finite one) and closed.
func (c *viewerClient) get(u string, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

// basic is an Authorization header.
func basic(name, pass string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(name+":"+pass))}}
}

// jpegSOI starts every JPEG frame.
var jpegSOI = []byte{0xFF, 0xD8, 0xFF}

// mjpeg GETs u with hdr and reports whether the answer is a multipart MJPEG
// stream with at least one JPEG frame in its first 256 KiB. The stream is
// endless: the body is closed after the first frame.
func (c *viewerClient) mjpeg(u string, hdr http.Header) error {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "multipart/x-mixed-replace") {
		return fmt.Errorf("GET %s: Content-Type %q, want multipart/x-mixed-replace", u, ct)
	}
	return readUntil(resp.Body, jpegSOI, 256<<10)
}

// readUntil reads r until it has seen want, at most limit bytes.
func readUntil(r io.Reader, want []byte, limit int) error {
	var got []byte
	buf := make([]byte, 16<<10)
	for len(got) < limit {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if bytes.Contains(got, want) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%x not in the %d bytes read: %w", want, len(got), err)
		}
	}
	return fmt.Errorf("%x not in the first %d bytes", want, len(got))
}

// readBody reads a finite body.
func readBody(t *testing.T, c *viewerClient, u string, hdr http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("GET %s: body: %v", u, err)
	}
	return resp, string(b)
}

// paths are the ways to the agent's services: through the relay, and
// through the direct listener when the env has one.
func (w *webEnv) paths(direct bool) map[string]string {
	p := map[string]string{"relay": "127.0.0.1"}
	if direct {
		p["direct"] = directIP
	}
	return p
}

// curlMJPEG runs the real curl with Basic auth against cam through to (the
// relay or the direct listener) and reads its output until the first JPEG
// frame, then ends it.
func curlMJPEG(t *testing.T, w *webEnv, to, user, pass string) error {
	t.Helper()
	port := strconv.Itoa(w.ports["cam"])
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "curl", "--silent", "--show-error", "--fail",
		"--cacert", w.caFile, "--resolve", "localhost:"+port+":"+to,
		"-u", user+":"+pass, "https://localhost:"+port+"/stream.mjpg")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("curl: %v", err)
	}
	rerr := readUntil(out, jpegSOI, 256<<10)
	cmd.Process.Kill()
	cmd.Wait()
	if rerr != nil {
		return fmt.Errorf("curl via %s: %w (stderr: %s)", to, rerr, stderr.String())
	}
	return nil
}

// TestViewerLogins: a viewer with a password gets the camera's MJPEG through
// the relay and the direct listener (curl, Basic); wrong passwords and unknown
// names get the same 401 and never the camera's challenge; a guesser is
// locked out (429, Retry-After); a viewer not listed for the service gets 403;
// the form login's cookie works until logout and a forged one does not; link
// tokens work until revoked; a camera that refuses the agent's login or is
// off gives Porthole's 502 page; plain HTTP is redirected; the audit log holds
// it all and no password.
func TestViewerLogins(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	w := startWeb(t, webOpts{direct: true})

	for path, to := range w.paths(true) {
		t.Run("basic/"+path, func(t *testing.T) {
			if err := curlMJPEG(t, w, to, "alice", alicePass); err != nil {
				t.Fatal(err)
			}
			// the same with Go's client, to read the headers
			c := w.client(to, "127.0.0.1")
			if err := c.mjpeg(w.url("cam", "/stream.mjpg"), basic("alice", alicePass)); err != nil {
				t.Fatal(err)
			}
		})
	}

	for path, to := range w.paths(true) {
		t.Run("wrong-password/"+path, func(t *testing.T) {
			src := map[string]string{"relay": "127.0.0.10", "direct": "127.0.0.11"}[path]
			c := w.client(to, src)
			wrong, wrongBody := readBody(t, c, w.url("cam", "/stream.mjpg"), basic("alice", "not-"+alicePass))
			unknown, unknownBody := readBody(t, c, w.url("cam", "/stream.mjpg"), basic("mallory", alicePass))
			for _, r := range []*http.Response{wrong, unknown} {
				if r.StatusCode != http.StatusUnauthorized {
					t.Errorf("status %s, want 401", r.Status)
				}
				for _, h := range r.Header.Values("Www-Authenticate") {
					if !strings.HasPrefix(h, "Basic ") || strings.Contains(strings.ToLower(h), "digest") {
						t.Errorf("WWW-Authenticate %q: want only Porthole's Basic challenge", h)
					}
				}
			}
			if a, b := wrong.Header.Get("Www-Authenticate"), unknown.Header.Get("Www-Authenticate"); a != b || a == "" {
				t.Errorf("challenges differ: wrong password %q, unknown name %q", a, b)
			}
			if wrongBody != unknownBody {
				t.Errorf("bodies differ:\nwrong password: %s\nunknown name:   %s", wrongBody, unknownBody)
			}
			// curl sees the same 401 (--fail: exit 22)
			if err := curlMJPEG(t, w, to, "alice", "not-"+alicePass); err == nil {
				t.Error("curl with a wrong password got a frame")
			}
		})
	}

	for path, to := range w.paths(true) {
		t.Run("lockout/"+path, func(t *testing.T) {
			src := map[string]string{"relay": "127.0.0.12", "direct": "127.0.0.13"}[path]
			c := w.client(to, src)
			var last *http.Response
			for i := 0; i < 20; i++ {
				r, err := c.get(w.url("cam", "/"), basic("alice", fmt.Sprintf("guess-%d", i)))
				if err != nil {
					t.Fatal(err)
				}
				last = r
				if r.StatusCode == http.StatusTooManyRequests {
					break
				}
				if r.StatusCode != http.StatusUnauthorized {
					t.Fatalf("guess %d: %s, want 401 then 429", i, r.Status)
				}
			}
			if last.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("20 wrong passwords: still %s, want 429", last.Status)
			}
			if s, err := strconv.Atoi(last.Header.Get("Retry-After")); err != nil || s < 1 {
				t.Errorf("Retry-After %q, want seconds >= 1", last.Header.Get("Retry-After"))
			}
			// the right password from the locked address waits too
			if r, err := c.get(w.url("cam", "/"), basic("alice", alicePass)); err != nil || r.StatusCode != http.StatusTooManyRequests {
				t.Errorf("right password from a locked source: %v %v, want 429", r.Status, err)
			}
		})
	}

	for path, to := range w.paths(true) {
		t.Run("not-listed/"+path, func(t *testing.T) {
			c := w.client(to, "127.0.0.1")
			r, err := c.get(w.url("cam", "/stream.mjpg"), basic("bob", bobPass))
			if err != nil {
				t.Fatal(err)
			}
			if r.StatusCode != http.StatusForbidden {
				t.Errorf("bob (not in cam's viewers) got %s, want 403", r.Status)
			}
			// bob is a viewer: badcam lists nobody, so everybody may
			if r, err := c.get(w.url("offcam", "/"), basic("bob", bobPass)); err != nil || r.StatusCode == http.StatusForbidden || r.StatusCode == http.StatusUnauthorized {
				t.Errorf("bob on offcam: %v %v, want past the login", r.Status, err)
			}
		})
	}

	for path, to := range w.paths(true) {
		t.Run("form/"+path, func(t *testing.T) {
			c := w.client(to, "127.0.0.1")
			cookie := formLogin(t, c, w.url("cam", ""), "alice", alicePass)
			withCookie := http.Header{"Cookie": {cookie.String()}}
			if err := c.mjpeg(w.url("cam", "/stream.mjpg"), withCookie); err != nil {
				t.Fatal(err)
			}

			forged := &http.Cookie{Name: cookie.Name, Value: flipChar(cookie.Value)}
			r, err := c.get(w.url("cam", "/"), http.Header{"Cookie": {forged.String()}, "Accept": {"text/html"}})
			if err != nil {
				t.Fatal(err)
			}
			if loc := r.Header.Get("Location"); r.StatusCode/100 != 3 || !strings.Contains(loc, "/.porthole/login") {
				t.Errorf("forged cookie: %s Location %q, want a redirect to the login", r.Status, loc)
			}

			req, _ := http.NewRequest(http.MethodPost, w.url("cam", "/.porthole/logout"), nil)
			req.Header.Set("Cookie", cookie.String())
			req.Header.Set("Origin", w.url("cam", ""))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode/100 != 3 {
				t.Errorf("logout: %s", resp.Status)
			}
			r, err = c.get(w.url("cam", "/stream.mjpg"), withCookie)
			if err != nil {
				t.Fatal(err)
			}
			if r.StatusCode != http.StatusUnauthorized {
				t.Errorf("cookie after logout: %s, want 401", r.Status)
			}
		})
	}

	t.Run("links", func(t *testing.T) {
		code, out := runCmd(t, bins.agent, "-config", w.agentCfg, "link", "alice")
		if code != 0 {
			t.Fatalf("link alice: exit %d: %s", code, out)
		}
		token, id := parseLink(t, out)
		// a running agent notices links.json's change within a second (it
		// looks at most once a second, so that guesses cannot make it read
		// the file at request rate)
		eventually(t, 5*time.Second, func() bool {
			r, err := w.client(w.paths(true)["direct"], "127.0.0.1").get(w.url("cam", "/stream.mjpg?porthole_token="+url.QueryEscape(token)), nil)
			return err == nil && r.StatusCode != http.StatusForbidden
		}, "the new link is not accepted")
		for path, to := range w.paths(true) {
			c := w.client(to, "127.0.0.1")
			if err := c.mjpeg(w.url("cam", "/stream.mjpg?porthole_token="+url.QueryEscape(token)), nil); err != nil {
				t.Errorf("%s: link token: %v", path, err)
			}
		}
		if code, out := runCmd(t, bins.agent, "-config", w.agentCfg, "link", "-revoke", id); code != 0 {
			t.Fatalf("link -revoke %s: exit %d: %s", id, code, out)
		}
		for path, to := range w.paths(true) {
			c := w.client(to, "127.0.0.1")
			eventually(t, 5*time.Second, func() bool {
				r, err := c.get(w.url("cam", "/stream.mjpg?porthole_token="+url.QueryEscape(token)), nil)
				return err == nil && r.StatusCode == http.StatusForbidden
			}, "%s: the revoked link still works", path)
		}
	})

	t.Run("camera-refuses", func(t *testing.T) {
		before := len(w.agent.Lines("the camera refused the agent's login"))
		for path, to := range w.paths(true) {
			c := w.client(to, "127.0.0.1")
			for range 3 {
				r, body := readBody(t, c, w.url("badcam", "/stream.mjpg"), basic("alice", alicePass))
				if r.StatusCode != http.StatusBadGateway || !strings.Contains(body, "refused") {
					t.Errorf("%s: camera refusing camera_login: %s %q, want 502 saying it refused", path, r.Status, body)
				}
				for _, h := range r.Header.Values("Www-Authenticate") {
					t.Errorf("%s: WWW-Authenticate %q reached the viewer", path, h)
				}
				if strings.Contains(body, "Digest") || strings.Contains(body, "nonce") {
					t.Errorf("%s: the camera's challenge is in the page: %q", path, body)
				}
			}
		}
		if n := len(w.agent.Lines("the camera refused the agent's login")) - before; n != 1 {
			t.Errorf("agent logged the refusal %d times for 6 requests, want once", n)
		}
	})

	t.Run("camera-off", func(t *testing.T) {
		for path, to := range w.paths(true) {
			c := w.client(to, "127.0.0.1")
			r, body := readBody(t, c, w.url("offcam", "/"), basic("alice", alicePass))
			if r.StatusCode != http.StatusBadGateway || !strings.Contains(strings.ToLower(body), "camera") {
				t.Errorf("%s: camera off: %s %q, want Porthole's 502 page", path, r.Status, body)
			}
		}
	})

	t.Run("plain-http", func(t *testing.T) {
		for path, to := range w.paths(true) {
			port := strconv.Itoa(w.ports["cam"])
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true},
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			req, _ := http.NewRequest(http.MethodGet, "http://"+net.JoinHostPort(to, port)+"/stream.mjpg?x=1", nil)
			req.Host = "cam.example.com:" + port
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s: plain GET: %v", path, err)
			}
			resp.Body.Close()
			want := "https://cam.example.com:" + port + "/stream.mjpg?x=1"
			if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
				t.Errorf("%s: plain http: %s Location %q, want 308 to %s", path, resp.Status, resp.Header.Get("Location"), want)
			}
		}
	})

	// Answers before a close (Connection: close, HTTP/1.0) arrive whole:
	// through the relay they were reset one time in three.
	t.Run("connection-close", func(t *testing.T) {
		for path, to := range w.paths(true) {
			for i := range 10 {
				c, err := tls.Dial("tcp", net.JoinHostPort(to, strconv.Itoa(w.ports["cam"])), &tls.Config{RootCAs: w.roots, ServerName: "localhost"})
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(c, "GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
				b, err := io.ReadAll(c)
				c.Close()
				if err == nil {
					err = wholeResponse(b, http.StatusUnauthorized)
				}
				if err != nil {
					t.Fatalf("%s: request %d with Connection: close: %d bytes %.40q: %v", path, i, len(b), b, err)
				}
			}
		}
	})

	t.Run("audit", func(t *testing.T) {
		path := filepath.Join(w.stateDir, "audit.log")
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %o, want 0600", path, fi.Mode().Perm())
		}
		// "close" events come when connections end: the MJPEG fetches
		// above closed theirs.
		var recs []map[string]any
		eventually(t, 10*time.Second, func() bool {
			recs = auditRecords(t, path)
			return hasEvent(recs, "close", func(r map[string]any) bool { n, _ := r["bytes_out"].(float64); return n > 0 })
		}, "no close event with bytes_out in %s", path)
		for _, ev := range []string{"login", "login_failed", "locked_out", "open", "logout", "link_used", "link_refused"} {
			if !hasEvent(recs, ev, nil) {
				t.Errorf("no %q event in the audit log", ev)
			}
		}
		assertNoSecrets(t, path)
	})

	t.Run("no-secrets-in-logs", func(t *testing.T) {
		for _, p := range []*Process{w.relay, w.agent} {
			for _, s := range []string{alicePass, bobPass, cameraPass} {
				if strings.Contains(p.Log(), s) {
					t.Errorf("%s's log holds a password", p.name)
				}
			}
		}
		assertNoSecretsIn(t, w.relayStateDir)
	})
}

// wholeResponse checks that b is one whole HTTP response with status want:
// its body as long as its Content-Length says.
func wholeResponse(b []byte, want int) error {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("body after %d bytes: %w", len(body), err)
	}
	if resp.StatusCode != want || resp.ContentLength != int64(len(body)) {
		return fmt.Errorf("%s with %d of %d bytes, want %d", resp.Status, len(body), resp.ContentLength, want)
	}
	return nil
}

// formLogin posts the login form (with Origin, as a browser does) and
// returns the session cookie.
func formLogin(t *testing.T, c *viewerClient, origin, name, pass string) *http.Cookie {
	t.Helper()
	form := url.Values{"name": {name}, "password": {pass}, "next": {"/"}}
	req, err := http.NewRequest(http.MethodPost, origin+"/.porthole/login", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", origin)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s, want 303", resp.Status)
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == "porthole_session" && ck.Value != "" {
			if !ck.Secure || !ck.HttpOnly {
				t.Errorf("session cookie: Secure %v HttpOnly %v, want both", ck.Secure, ck.HttpOnly)
			}
			return &http.Cookie{Name: ck.Name, Value: ck.Value}
		}
	}
	t.Fatalf("login: no porthole_session cookie in %v", resp.Header.Values("Set-Cookie"))
	return nil
}

// flipChar changes the last character of s (a forged session).
func flipChar(s string) string {
	if s == "" {
		return "x"
	}
	c := s[len(s)-1]
	r := byte('A')
	if c == 'A' {
		r = 'B'
	}
	return s[:len(s)-1] + string(r)
}

// parseLink reads the token (the first line) and the link's ID from the
// output of `porthole-agent link NAME`.
func parseLink(t *testing.T, out string) (token, id string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if token == "" && l != "" {
			token = l
		}
		if rest, ok := strings.CutPrefix(l, "link "); ok && id == "" {
			id, _, _ = strings.Cut(rest, " ")
		}
	}
	if token == "" || id == "" {
		t.Fatalf("link: no token or ID in:\n%s", out)
	}
	return token, id
}

// auditRecords reads the audit log's JSON lines.
func auditRecords(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for l := range strings.SplitSeq(string(b), "\n") {
		if l == "" {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Errorf("audit line %q: %v", l, err)
			continue
		}
		out = append(out, r)
	}
	return out
}

func hasEvent(recs []map[string]any, msg string, ok func(map[string]any) bool) bool {
	for _, r := range recs {
		if r["msg"] == msg && (ok == nil || ok(r)) {
			return true
		}
	}
	return false
}

// assertNoSecrets fails if the file holds a password of the test.
func assertNoSecrets(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{alicePass, bobPass, cameraPass, "not-" + alicePass, "not-the-camera-password"} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("%s holds a password", path)
		}
	}
}

// assertNoSecretsIn checks every file under dir.
func assertNoSecretsIn(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			assertNoSecrets(t, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
