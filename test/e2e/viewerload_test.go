package e2e

// Issue 8 under pressure and from the relay's seat: a login storm from one
// address does not lock out a viewer elsewhere; slow viewers are dropped at
// the deadlines while others are served; the relay carries only ciphertext;
// -check warns about a camera's own login open to the internet.

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/test/framework"
)

// TestLoginStorm: 1000 wrong logins from 127.0.0.2 (through the relay, as
// fast as the agent answers; more if alice is not through by then) lock out
// that address, and alice, logging in meanwhile from 127.0.0.3, gets in: by
// Basic and by the form, no 429.
func TestLoginStorm(t *testing.T) {
	t.Parallel()
	w := startWeb(t, webOpts{})
	const attempts, workers = 1000, 8

	var sent, locked atomic.Int64
	var aliceDone atomic.Bool // the storm goes on until alice is through
	var other sync.Map        // unexpected statuses -> count
	errs := make(chan error, workers)
	stormer := w.client("127.0.0.1", "127.0.0.2")
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := sent.Add(1); n <= attempts || !aliceDone.Load(); n = sent.Add(1) {
				// half at alice's name, half at names that don't exist
				name := "alice"
				if n%2 == 0 {
					name = "nobody" + strconv.Itoa(int(n))
				}
				r, err := stormer.get(w.url("cam", "/stream.mjpg"), basic(name, fmt.Sprintf("guess-%d-%d", i, n)))
				if err != nil {
					errs <- err
					return
				}
				switch r.StatusCode {
				case http.StatusTooManyRequests:
					locked.Add(1)
				case http.StatusUnauthorized:
				default:
					v, _ := other.LoadOrStore(r.Status, new(atomic.Int64))
					v.(*atomic.Int64).Add(1)
				}
			}
		}()
	}

	// alice logs in while the storm runs (once it is locked out, so that
	// the lockout is in force).
	eventually(t, 30*time.Second, func() bool { return locked.Load() > 0 || sent.Load() > attempts }, "no 429 in the storm")
	alice := w.client("127.0.0.1", "127.0.0.3")
	if err := alice.mjpeg(w.url("cam", "/stream.mjpg"), basic("alice", alicePass)); err != nil {
		t.Errorf("alice during the storm (Basic): %v", err)
	}
	cookie := formLogin(t, alice, w.url("cam", ""), "alice", alicePass)
	if err := alice.mjpeg(w.url("cam", "/stream.mjpg"), http.Header{"Cookie": {cookie.String()}}); err != nil {
		t.Errorf("alice during the storm (form): %v", err)
	}
	aliceDone.Store(true)

	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("storm: %v", err)
	}
	other.Range(func(k, v any) bool {
		t.Errorf("storm: %d answers %v, want only 401 and 429", v.(*atomic.Int64).Load(), k)
		return true
	})
	// The address is locked after 5 failures: nearly all of the storm is
	// refused without hashing.
	total := sent.Load() - workers // each worker's last Add sent nothing
	if n := locked.Load(); n < total-10 {
		t.Errorf("storm: %d of %d attempts got 429, want all but the first few", n, total)
	}
	// and after the storm too
	if err := w.client("127.0.0.1", "127.0.0.3").mjpeg(w.url("cam", "/stream.mjpg"), basic("alice", alicePass)); err != nil {
		t.Errorf("alice after the storm: %v", err)
	}
}

// TestSlowViewers: a viewer that starts a TLS handshake and stalls, and one
// that finishes TLS but never finishes its request headers, are dropped
// (first_byte_timeout: 3s bounds the handshake; the http server's header
// deadline the request), through the relay and on the direct listener,
// while a normal viewer is served.
func TestSlowViewers(t *testing.T) {
	t.Parallel()
	w := startWeb(t, webOpts{direct: true, firstByte: "3s"})
	var wg sync.WaitGroup
	for path, to := range w.paths(true) {
		addr := net.JoinHostPort(to, strconv.Itoa(w.ports["cam"]))

		// Half a ClientHello: a record header that promises 512 bytes, 10 of them.
		half := dialAddr(t, addr)
		half.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03})

		// TLS done, request headers never finished.
		tc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: w.roots, ServerName: "localhost"})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		t.Cleanup(func() { tc.Close() })
		io.WriteString(tc, "GET /stream.mjpg HTTP/1.1\r\nHost: localhost\r\nAuthor")

		for _, c := range []struct {
			what string
			conn net.Conn
		}{{"half a TLS handshake", half}, {"unfinished request headers", tc}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Well past the deadlines (3 s, 10 s); what counts is that
				// the agent closes, not when.
				c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
				n, err := io.Copy(io.Discard, c.conn)
				if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
					t.Errorf("%s: %s: still open after 30 s (%d bytes read)", path, c.what, n)
				}
			}()
		}

		// Meanwhile a viewer with a password is served.
		if err := w.client(to, "127.0.0.1").mjpeg(w.url("cam", "/stream.mjpg"), basic("alice", alicePass)); err != nil {
			t.Errorf("%s: viewer beside the slow ones: %v", path, err)
		}
	}
	wg.Wait()
}

// dialAddr dials host:port for a test.
func dialAddr(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recorder is a TCP proxy that keeps every byte it forwards, both ways.
type recorder struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	up     bytes.Buffer // viewer -> relay
	down   bytes.Buffer // relay -> viewer
	wg     sync.WaitGroup
}

func startRecorder(t *testing.T, target string) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln, target: target}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(func() { ln.Close(); r.wg.Wait() })
	return r
}

func (r *recorder) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", r.target)
		if err != nil {
			c.Close()
			continue
		}
		r.wg.Add(2)
		go r.copy(u, c, &r.up)
		go r.copy(c, u, &r.down)
	}
}

func (r *recorder) copy(dst, src net.Conn, rec *bytes.Buffer) {
	defer r.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			rec.Write(buf[:n])
			r.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			src.Close()
			dst.Close()
			return
		}
	}
}

func (r *recorder) bytes() (up, down []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.up.Bytes()), bytes.Clone(r.down.Bytes())
}

// TestRelaySeesCiphertext: between the viewer and the relay's public port,
// a recording proxy sees a form login, a Basic login and an MJPEG stream go
// by, and none of it in the clear: no password, no viewer name, no
// Authorization header, no JPEG frame, no multipart boundary. The relay's own
// log and state hold no password either.
func TestRelaySeesCiphertext(t *testing.T) {
	t.Parallel()
	w := startWeb(t, webOpts{})
	rec := startRecorder(t, framework.Addr(w.ports["cam"]))
	c := w.client(rec.ln.Addr().String(), "127.0.0.1")

	cookie := formLogin(t, c, w.url("cam", ""), "alice", alicePass)
	if err := c.mjpeg(w.url("cam", "/stream.mjpg"), http.Header{"Cookie": {cookie.String()}}); err != nil {
		t.Fatal(err)
	}
	// Basic, reading a few frames; keep what the viewer got in the clear.
	req, _ := http.NewRequest(http.MethodGet, w.url("cam", "/stream.mjpg"), nil)
	req.SetBasicAuth("alice", alicePass)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		t.Fatalf("Content-Type %q: no boundary", resp.Header.Get("Content-Type"))
	}
	var clear []byte
	buf := make([]byte, 16<<10)
	for bytes.Count(clear, jpegSOI) < 3 && len(clear) < 4<<20 {
		n, err := resp.Body.Read(buf)
		clear = append(clear, buf[:n]...)
		if err != nil {
			t.Fatalf("MJPEG after %d bytes: %v", len(clear), err)
		}
	}
	resp.Body.Close()
	i := bytes.Index(clear, jpegSOI)
	if i < 0 || len(clear) < i+16 {
		t.Fatal("no JPEG frame in the stream")
	}
	// A frame's first 16 bytes (SOI and the start of its tables): three
	// bytes FF D8 FF alone turn up by chance in a megabyte of ciphertext
	// about once in 16 runs; 16 bytes never do.
	frame := clear[i : i+16]

	up, down := rec.bytes()
	if len(up) == 0 || len(down) < len(clear) {
		t.Fatalf("the recorder saw %d bytes up, %d down; the viewer got %d in the clear", len(up), len(down), len(clear))
	}
	auth := base64.StdEncoding.EncodeToString([]byte("alice:" + alicePass))
	for dir, b := range map[string][]byte{"viewer->relay": up, "relay->viewer": down} {
		for what, s := range map[string][]byte{
			"the password":            []byte(alicePass),
			"the Basic credentials":   []byte(auth),
			"an Authorization header": []byte("Authorization"),
			"the viewer's name":       []byte("alice"),
			"a JPEG frame":            frame,
			"multipart":               []byte("multipart"),
			"the MJPEG boundary":      []byte(params["boundary"]),
			"the session cookie":      []byte(cookie.Value),
			"the camera's password":   []byte(cameraPass),
		} {
			if bytes.Contains(b, s) {
				t.Errorf("%s: %s in the clear", dir, what)
			}
		}
	}
	for _, s := range []string{alicePass, cameraPass, auth} {
		if strings.Contains(w.relay.Log(), s) {
			t.Error("the relay's log holds a secret")
		}
	}
	assertNoSecretsIn(t, w.relayStateDir)
}

// TestCheckWarnsTCPAny: -check on a config with a tcp service open to [any]
// prints a warning naming the allow: line, and exits 0 (a warning, not an
// error).
func TestCheckWarnsTCPAny(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ac := framework.AgentConfig{Name: "home", StateDir: dir + "/state", Relay: "127.0.0.1:7443", Token: strongToken(),
		Services: []framework.Service{{Name: "frontdoor", Target: "192.168.1.20:554", Port: 10554, Allow: "[any]"}}}
	yaml := ac.YAML()
	line := 0
	for i, l := range strings.Split(yaml, "\n") {
		if strings.Contains(l, "allow: [any]") {
			line = i + 1
		}
	}
	if line == 0 {
		t.Fatalf("no allow line in\n%s", yaml)
	}
	path := writeFile(t, dir, "agent.yaml", yaml)
	code, out := runCmd(t, bins.agent, "-check", "-config", path)
	if code != 0 {
		t.Fatalf("-check: exit %d, want 0:\n%s", code, out)
	}
	want := path + ":" + strconv.Itoa(line) + ":"
	found := false
	for l := range strings.SplitSeq(out, "\n") {
		if strings.Contains(l, want) && strings.Contains(strings.ToLower(l), "warning") && strings.Contains(l, "allow") {
			found = true
		}
	}
	if !found {
		t.Errorf("-check: no warning naming %s (the allow: line); output:\n%s", want, out)
	}
}
