package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/icholy/digest"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway/httpgw"
	"github.com/porthole-dev/porthole/test/framework"
)

// HTTPSScale sizes the "https" and "login-storm" steps (issue #8: viewers
// log in over HTTPS that ends at the agent).
type HTTPSScale struct {
	// FirstFrames is how many times the first MJPEG frame is timed per path.
	FirstFrames int
	// Viewers logged-in viewers watch one camera at FPS for ViewerTime.
	Viewers    int
	ViewerTime time.Duration
	FPS        int
	// DownloadMiB is one download's size; Downloads how many per path.
	DownloadMiB int
	Downloads   int
	// StormAttempts wrong-password logins from one address, StormParallel at once.
	StormAttempts, StormParallel int
}

// webService is one service of a webStack's agent.
type webService struct {
	name, kind, target string
	// extra is YAML under the service (camera_login: ...).
	extra string
	// addr is the relay's listener for it, set by startWebStack.
	addr string
}

// webStack is a relay and an agent (separate processes) whose services are
// http (TLS at the agent, a self-signed certificate) and tcp, with viewers.
type webStack struct {
	*Stack
	services []webService
	// admin is the agent's admin endpoint (status, /metrics).
	admin string
	// tls verifies the agent's self-signed certificate (as "localhost", one
	// of its names): the bench pays a real handshake and a real check.
	tls *tls.Config
}

// addr is the relay's listener of service name.
func (w *webStack) addr(name string) string {
	for _, s := range w.services {
		if s.name == name {
			return s.addr
		}
	}
	panic("bench: no service " + name)
}

// benchPassword is every bench viewer's password.
const benchPassword = "correct horse battery staple"

// startWebStack starts a relay and an agent with services and viewers (names,
// all with benchPassword), and waits until the relay listens on every
// service's port and the agent has its certificate.
func startWebStack(ctx context.Context, bins Bins, services []webService, viewers []string, hash string) (*webStack, error) {
	dir, err := os.MkdirTemp("", "porthole-bench-web-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	w := &webStack{Stack: &Stack{cfg: StackConfig{Bins: bins}, dir: dir}, services: slices.Clone(services)}
	fail := func(err error) (*webStack, error) { w.Close(); return nil, err }
	rport, err := framework.FreePort("both")
	if err != nil {
		return fail(err)
	}
	w.RelayAddr = framework.Addr(rport)
	ports := make([]int, len(services))
	for i := range ports {
		if ports[i], err = framework.FreePort("tcp"); err != nil {
			return fail(err)
		}
		w.services[i].addr = framework.Addr(ports[i])
	}
	w.ViewerAddr = w.services[0].addr
	tok := config.NewToken()
	rc := framework.RelayConfig{Listen: w.RelayAddr, StateDir: filepath.Join(dir, "relay-state"),
		Agents: []framework.RelayAgent{{Name: "home", Token: tok, Lo: slices.Min(ports), Hi: slices.Max(ports)}}}
	if w.relayCfg, err = framework.WriteFile(dir, "relay.yaml", rc.YAML()); err != nil {
		return fail(err)
	}
	var vy strings.Builder
	vy.WriteString("viewers:\n")
	for _, v := range viewers {
		fmt.Fprintf(&vy, "  %s: {password_hash: %q}\n", v, hash)
	}
	aport, err := framework.FreePort("tcp")
	if err != nil {
		return fail(err)
	}
	w.admin = framework.Addr(aport)
	fmt.Fprintf(&vy, "admin: %s\n", w.admin)
	ac := framework.AgentConfig{Name: "home", StateDir: filepath.Join(dir, "agent-state"), Relay: w.RelayAddr, Token: tok, Extra: vy.String()}
	for i, s := range w.services {
		ac.Services = append(ac.Services, framework.Service{Name: s.name, Kind: s.kind, Target: s.target, Port: ports[i], Extra: s.extra})
	}
	if w.agentCfg, err = framework.WriteFile(dir, "agent.yaml", ac.YAML()); err != nil {
		return fail(err)
	}
	if err := w.StartRelay(ctx); err != nil {
		return fail(err)
	}
	if err := w.StartAgent(ctx); err != nil {
		return fail(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, p := range ports {
		if err := framework.PollContext(wctx, 5*time.Millisecond, func() bool { ok, _ := w.Relay.Listening("tcp", p); return ok }); err != nil {
			return fail(fmt.Errorf("bench: service port %d not open: %w\n%s", p, err, framework.TailLines(w.Agent.Output(), 20)))
		}
	}
	if w.tls, err = agentCert(filepath.Join(dir, "agent-state")); err != nil {
		return fail(err)
	}
	return w, nil
}

// agentHeap is the agent's heap in use (go_memstats_heap_inuse_bytes of its
// /metrics), in KiB: unlike its RSS, it drops at each garbage collection,
// without waiting for the runtime to return pages to the kernel.
func (w *webStack) agentHeap(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.admin+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("bench: agent metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, fmt.Errorf("bench: agent metrics: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("bench: agent metrics: %q: %w", line, err)
			}
			return int64(f) / 1024, nil
		}
	}
	return 0, errors.New("bench: agent metrics: no go_memstats_heap_inuse_bytes")
}

// agentCert finds the agent's self-signed certificate under its state_dir.
func agentCert(stateDir string) (*tls.Config, error) {
	var pem []byte
	filepath.WalkDir(stateDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "self-signed.crt" {
			pem, _ = os.ReadFile(p)
			return fs.SkipAll
		}
		return nil
	})
	pool := x509.NewCertPool()
	if len(pem) == 0 || !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("bench: no self-signed certificate in %s", stateDir)
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}, nil
}

// client is an HTTP client of the agent's https services through the relay,
// from source address src (nil: any), that never follows redirects (the
// login's 303 is its answer).
func (w *webStack) client(src net.IP, keepAlive bool) *http.Client {
	return &http.Client{Transport: newTransport(src, w.tls, keepAlive), CheckRedirect: noRedirect}
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func newTransport(src net.IP, tc *tls.Config, keepAlive bool) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	return &http.Transport{DialContext: d.DialContext, TLSClientConfig: tc.Clone(), DisableKeepAlives: !keepAlive,
		MaxIdleConnsPerHost: 64, DisableCompression: true, ResponseHeaderTimeout: 30 * time.Second}
}

// login posts the login form to base (https://host:port) as a browser does
// (Origin: the same host) and returns the answer's status and, after a
// successful login, the session cookie.
func login(ctx context.Context, c *http.Client, base, name, password string) (status int, cookie *http.Cookie, err error) {
	form := url.Values{"name": {name}, "password": {password}, "next": {"/"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+httpgw.LoginPath, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("bench: login: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	for _, ck := range resp.Cookies() {
		if ck.Name == httpgw.CookieName && ck.Value != "" {
			cookie = ck
		}
	}
	if resp.StatusCode == http.StatusSeeOther && cookie == nil {
		return resp.StatusCode, nil, errors.New("bench: login: 303 without a session cookie")
	}
	return resp.StatusCode, cookie, nil
}

// startCamsim runs camsim as a process of its own on a free port, HTTP only,
// at fps, asking for a Digest login (admin / password) as real cameras do;
// extra are more camsim flags (-width, -height).
func startCamsim(ctx context.Context, fps int, password string, extra ...string) (*framework.Process, string, error) {
	bin, err := framework.Build(framework.CamsimPkg)
	if err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	port, err := framework.FreePort("tcp")
	if err != nil {
		return nil, "", err
	}
	addr := framework.Addr(port)
	p, err := framework.Start(framework.Spec{Name: "camsim", Path: bin, MaxOutput: 1 << 20,
		Args: append([]string{"-http", addr, "-rtsp", "", "-fps", strconv.Itoa(fps), "-auth", "digest", "-user", "admin"}, extra...),
		Env:  []string{"CAMSIM_PASSWORD=" + password}})
	if err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.WaitOutput(wctx, "http://"); err != nil {
		p.Kill()
		return nil, "", fmt.Errorf("bench: camsim: %w", err)
	}
	return p, addr, nil
}

// camClient is a client of camsim itself, answering its Digest challenge
// (remembered after the first 401, as the agent does).
func camClient(src net.IP, password string, keepAlive bool) *http.Client {
	return &http.Client{Transport: &digest.Transport{Username: "admin", Password: password, Transport: newTransport(src, nil, keepAlive)}}
}

// mjpegParts checks that resp is an MJPEG stream and returns its parts.
func mjpegParts(resp *http.Response) (*multipart.Reader, error) {
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: stream: %s", resp.Status)
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/x-mixed-replace" || params["boundary"] == "" {
		return nil, fmt.Errorf("bench: stream: Content-Type %q is not MJPEG", resp.Header.Get("Content-Type"))
	}
	return multipart.NewReader(resp.Body, params["boundary"]), nil
}

// nextJPEG reads the next part of an MJPEG stream whole and checks that it is
// one complete JPEG (SOI ... EOI, Content-Length bytes when it says).
func nextJPEG(mr *multipart.Reader, buf *bytes.Buffer) error {
	p, err := mr.NextPart()
	if err != nil {
		return err
	}
	buf.Reset()
	if _, err := buf.ReadFrom(p); err != nil {
		return err
	}
	b := buf.Bytes()
	if n, err := strconv.Atoi(p.Header.Get("Content-Length")); err == nil && n != len(b) {
		return fmt.Errorf("bench: frame of %d bytes, Content-Length %d", len(b), n)
	}
	if len(b) < 4 || b[0] != 0xff || b[1] != 0xd8 || b[len(b)-2] != 0xff || b[len(b)-1] != 0xd9 {
		return fmt.Errorf("bench: frame of %d bytes is not a complete JPEG", len(b))
	}
	return nil
}

// blobServer is an HTTP server in this process serving /blob: size bytes of
// random data (a 1 MiB random block repeated: nothing on the path compresses).
type blobServer struct {
	srv *http.Server
	ln  net.Listener
}

func startBlobServer(size int64) (*blobServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	block := make([]byte, 1<<20)
	rand.Read(block)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/blob" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		for left := size; left > 0; {
			n, err := w.Write(block[:min(int64(len(block)), left)])
			if err != nil {
				return
			}
			left -= int64(n)
		}
	})}
	go srv.Serve(ln)
	return &blobServer{srv: srv, ln: ln}, nil
}

func (b *blobServer) addr() string { return b.ln.Addr().String() }
func (b *blobServer) close()       { b.srv.Close() }
