package gateway

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testCert returns a self-signed certificate for name and a pool trusting it.
func testCert(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// tlsHandler checks what a handler behind TLS gets, then serves it as tcp.
type tlsHandler struct {
	t     *testing.T
	calls atomic.Int64
}

func (h *tlsHandler) Serve(ctx context.Context, v *Viewer) error {
	h.calls.Add(1)
	tc, ok := v.Conn.(*tls.Conn)
	if !ok {
		h.t.Errorf("handler got %T, want *tls.Conn", v.Conn)
	} else if sni := tc.ConnectionState().ServerName; sni != "cam.example.com" {
		h.t.Errorf("handler sees SNI %q", sni)
	}
	if len(v.Peeked) != 0 {
		h.t.Errorf("handler got %d peeked bytes after TLS", len(v.Peeked))
	}
	return TCP{}.Serve(ctx, v)
}

func TestTLSViewerReachesHandler(t *testing.T) {
	cert, pool := testCert(t, "cam.example.com")
	h := &tlsHandler{t: t}
	l := serve(t, Config{Service: "cam", Handler: h, Policy: allowAll(t), Dial: tcpDial(echoAfterEOF(t)),
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1", ALPNACME}}})

	c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{ServerName: "cam.example.com", RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("hello through tls")); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello through tls" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if h.calls.Load() != 1 {
		t.Errorf("handler called %d times", h.calls.Load())
	}
	if s := l.Stats(); s.TLSFailed != 0 || s.BytesIn != int64(len(got)) {
		t.Errorf("stats %+v", s)
	}
}

// A finished handshake is movement: the connection no longer counts as
// pending (idle) while the viewer has yet to send its request.
func TestTLSHandshakeEndsPending(t *testing.T) {
	cert, pool := testCert(t, "cam.example.com")
	h := &tlsHandler{t: t}
	l := serve(t, Config{Service: "cam", Handler: h, Policy: allowAll(t), Dial: tcpDial(echoAfterEOF(t)),
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	raw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	waitFor(t, "a pending connection", func() bool { s := l.Stats(); return s.Active == 1 && s.Pending == 1 })
	c := tls.Client(raw, &tls.Config{ServerName: "cam.example.com", RootCAs: pool})
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the handshake to end pending", func() bool { s := l.Stats(); return s.Active == 1 && s.Pending == 0 })
}

func allowAll(t *testing.T) Policy {
	p, err := ParsePolicy([]string{"any"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlainRequestRedirected(t *testing.T) {
	cert, _ := testCert(t, "cam.example.com")
	h := &tlsHandler{t: t}
	l := serve(t, Config{Service: "cam", Handler: h, Policy: allowAll(t), Dial: tcpDial(echoAfterEOF(t)),
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Plain: RedirectHTTPS})

	ask := func(req string) (*http.Response, string) {
		t.Helper()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, _ := ask("GET /live/cam1?fps=5 HTTP/1.1\r\nHost: home.example.com:10443\r\n\r\n")
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://home.example.com:10443/live/cam1?fps=5" {
		t.Errorf("redirect: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := ask("GET / HTTP/1.0\r\n\r\n")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "HTTPS") {
		t.Errorf("no Host: %d %q", resp.StatusCode, body)
	}
	resp, _ = ask("GET / HTTP/1.1\r\nHost: evil.example@home.example.com\r\n\r\n")
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("Host with userinfo: %d, want 400", resp.StatusCode)
	}

	// Not HTTP either: closed without an answer.
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "\x00\x01binary\r\n\r\n")
	if b, err := io.ReadAll(c); len(b) != 0 || os.IsTimeout(err) {
		t.Errorf("non-HTTP got %q, %v", b, err)
	}
	if h.calls.Load() != 0 {
		t.Error("plain viewer reached the handler")
	}
	if s := l.Stats(); s.Plain != 4 {
		t.Errorf("Stats.Plain = %d, want 4", s.Plain)
	}
}

func TestStalledHandshakeDropped(t *testing.T) {
	cert, _ := testCert(t, "cam.example.com")
	h := &tlsHandler{t: t}
	l := serve(t, Config{Service: "cam", Handler: h, Policy: allowAll(t), Dial: tcpDial(echoAfterEOF(t)),
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, FirstByteTimeout: 50 * time.Millisecond})

	for _, tc := range []struct {
		name string
		send []byte
	}{{"silent", nil}, {"one byte of ClientHello", []byte{0x16}}, {"half a record header", []byte{0x16, 0x03, 0x01}}} {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(tc.send)
		// The gateway must end the connection by itself; the client only
		// guards against a hang.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s: connection still open after the handshake deadline", tc.name)
		}
		c.Close()
	}
	waitFor(t, "counters", func() bool { s := l.Stats(); return s.Refused == 1 && s.TLSFailed == 2 && s.Active == 0 })
	if h.calls.Load() != 0 {
		t.Error("a stalled viewer reached the handler")
	}
}

func TestACMEChallengeHandshakeClosed(t *testing.T) {
	cert, _ := testCert(t, "cam.example.com")
	chal, _ := testCert(t, "challenge.invalid")
	h := &tlsHandler{t: t}
	var served atomic.Int64
	cfg := &tls.Config{
		NextProtos: []string{"http/1.1", ALPNACME},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if slices.Contains(hello.SupportedProtos, ALPNACME) {
				served.Add(1)
				return &chal, nil
			}
			return &cert, nil
		},
	}
	l := serve(t, Config{Service: "cam", Handler: h, Policy: allowAll(t), Dial: tcpDial(echoAfterEOF(t)), TLS: cfg})

	c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{ServerName: "cam.example.com", InsecureSkipVerify: true, NextProtos: []string{ALPNACME}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st := c.ConnectionState()
	if st.NegotiatedProtocol != ALPNACME || st.PeerCertificates[0].Subject.CommonName != "challenge.invalid" {
		t.Errorf("challenge handshake: proto %q cert %q", st.NegotiatedProtocol, st.PeerCertificates[0].Subject.CommonName)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after the challenge handshake: %v, want EOF", err)
	}
	if h.calls.Load() != 0 || served.Load() != 1 {
		t.Errorf("handler calls %d, challenge certs served %d", h.calls.Load(), served.Load())
	}
}

// recordConn is a conn whose peer has sent everything already (Read: EOF)
// and that records what is written to it.
type recordConn struct {
	net.Conn
	out strings.Builder
}

func (c *recordConn) Read([]byte) (int, error)    { return 0, io.EOF }
func (c *recordConn) Write(b []byte) (int, error) { return c.out.Write(b) }
func (c *recordConn) Close() error                { return nil }

// FuzzRedirectHTTPS: whatever a viewer sends, the answer is nothing, a 400,
// or a 308 to https on a host made of host characters only (no header
// splitting, no redirect to somewhere else).
func FuzzRedirectHTTPS(f *testing.F) {
	f.Add([]byte("GET /a?b=c HTTP/1.1\r\nHost: home.example.com:10443\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	f.Add([]byte("GET http://x/y HTTP/1.1\r\nHost: a@b\r\n\r\n"))
	f.Add([]byte("OPTIONS * HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &recordConn{}
		RedirectHTTPS(c, in)
		out := c.out.String()
		if out == "" {
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out)), nil)
		if err != nil {
			t.Fatalf("unparsable answer %q: %v", out, err)
		}
		switch resp.StatusCode {
		case http.StatusBadRequest:
		case http.StatusPermanentRedirect:
			loc := resp.Header.Get("Location")
			rest, ok := strings.CutPrefix(loc, "https://")
			host, _, _ := strings.Cut(rest, "/")
			if !ok || !validHost(host) || !strings.HasPrefix(rest[len(host):], "/") {
				t.Fatalf("Location %q", loc)
			}
			if len(resp.Header) != 3 || !resp.Close {
				t.Fatalf("headers %v", resp.Header)
			}
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
}

// RedirectRTSPS sends a plain RTSP request to rtsps:// on the same port,
// keeping its CSeq, path and query.
func TestRedirectRTSPS(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"OPTIONS rtsp://home.example.com:10554/frontdoor RTSP/1.0\r\nCSeq: 1\r\n\r\n",
			"RTSP/1.0 301 This port speaks RTSPS: open rtsps://home.example.com:10554/frontdoor\r\nCSeq: 1\r\n" +
				"Location: rtsps://home.example.com:10554/frontdoor\r\nContent-Length: 0\r\n\r\n"},
		{"DESCRIBE rtsp://[::1]:8554/cam/low?x=1 RTSP/1.0\r\nCSeq: 7\r\n\r\n",
			"RTSP/1.0 301 This port speaks RTSPS: open rtsps://[::1]:8554/cam/low?x=1\r\nCSeq: 7\r\n" +
				"Location: rtsps://[::1]:8554/cam/low?x=1\r\nContent-Length: 0\r\n\r\n"},
		{"OPTIONS rtsp://a@b/cam RTSP/1.0\r\nCSeq: 2\r\n\r\n",
			"RTSP/1.0 400 This port speaks RTSPS: open rtsps://<host>:<port>/<service>\r\nCSeq: 2\r\nContent-Length: 0\r\n\r\n"},
		{"OPTIONS * RTSP/1.0\r\n\r\n",
			"RTSP/1.0 400 This port speaks RTSPS: open rtsps://<host>:<port>/<service>\r\nContent-Length: 0\r\n\r\n"},
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ""},
		{"OPTIONS rtsp://h/cam RTSP/1.0\r\n", ""}, // no end of head
	} {
		c := &recordConn{}
		RedirectRTSPS(c, []byte(tc.in))
		if got := c.out.String(); got != tc.want {
			t.Errorf("RedirectRTSPS(%q) =\n%q\nwant\n%q", tc.in, got, tc.want)
		}
	}
}

// FuzzRedirectRTSPS: whatever a viewer sends, the answer is nothing, a 400,
// or a 301 to rtsps on a host made of host characters only, in one head
// (no header splitting).
func FuzzRedirectRTSPS(f *testing.F) {
	f.Add([]byte("OPTIONS rtsp://home.example.com:10554/frontdoor RTSP/1.0\r\nCSeq: 1\r\n\r\n"))
	f.Add([]byte("DESCRIBE rtsp://x/y%0d%0aLocation:%20z RTSP/1.0\r\nCSeq: 99999999999\r\n\r\n"))
	f.Add([]byte("SETUP rtsp://a@b/c RTSP/1.0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &recordConn{}
		RedirectRTSPS(c, in)
		out := c.out.String()
		if out == "" {
			return
		}
		head, rest, ok := strings.Cut(out, "\r\n\r\n")
		if !ok || rest != "" {
			t.Fatalf("not one head: %q", out)
		}
		lines := strings.Split(head, "\r\n")
		switch {
		case strings.HasPrefix(lines[0], "RTSP/1.0 400 "):
		case strings.HasPrefix(lines[0], "RTSP/1.0 301 "):
			var loc string
			for _, l := range lines[1:] {
				if v, ok := strings.CutPrefix(l, "Location: "); ok {
					loc = v
				}
			}
			rest, ok := strings.CutPrefix(loc, "rtsps://")
			host, _, _ := strings.Cut(rest, "/")
			host, _, _ = strings.Cut(host, "?")
			if !ok || !validHost(host) {
				t.Fatalf("Location %q", loc)
			}
		default:
			t.Fatalf("status line %q", lines[0])
		}
		for _, l := range lines {
			if strings.ContainsAny(l, "\r\n") {
				t.Fatalf("line %q", l)
			}
		}
		if len(lines) > 4 {
			t.Fatalf("headers %q", lines)
		}
	})
}
