// Package transporttest is the conformance suite every implementation of the
// tunnel's transport seam passes, run against a connected pair on loopback,
// plus helpers those tests share (a self-signed TLS pair).
package transporttest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/tunnel/transport"
)

// ALPN is the application protocol the helpers' TLS configs negotiate.
const ALPN = "porthole-test"

// TLSConfigs returns a server config with a fresh self-signed certificate for
// "relay.test" and a client config that trusts it, both with [ALPN].
func TLSConfigs(t testing.TB) (client, server *tls.Config) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "relay.test"},
		DNSNames:     []string{"relay.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: cert}},
		NextProtos:   []string{ALPN},
		MinVersion:   tls.VersionTLS13,
	}
	client = &tls.Config{
		RootCAs:    pool,
		ServerName: "relay.test",
		NextProtos: []string{ALPN},
		MinVersion: tls.VersionTLS13,
	}
	return client, server
}

// NewPair returns two connected Conns: client dialed server (the agent and the
// relay). It must arrange, with t.Cleanup, to close both and anything else it
// started (listeners, sockets), so that nothing it started outlives t.
type NewPair func(t *testing.T) (client, server transport.Conn)

// Run runs the conformance suite. Subtests run one after another (the
// goroutine-leak check counts goroutines).
func Run(t *testing.T, newPair NewPair) {
	t.Run("Streams", func(t *testing.T) { testStreams(t, newPair) })
	t.Run("ClientStream", func(t *testing.T) { testClientStream(t, newPair) })
	t.Run("HalfClose", func(t *testing.T) { testHalfClose(t, newPair) })
	t.Run("CloseKeepsFIN", func(t *testing.T) { testCloseKeepsFIN(t, newPair) })
	t.Run("Abort", func(t *testing.T) { testAbort(t, newPair) })
	t.Run("CloseIsNotEOF", func(t *testing.T) { testCloseIsNotEOF(t, newPair) })
	t.Run("Datagrams", func(t *testing.T) { testDatagrams(t, newPair) })
	t.Run("CloseWithError", func(t *testing.T) { testCloseWithError(t, newPair) })
	t.Run("Exporter", func(t *testing.T) { testExporter(t, newPair) })
	t.Run("Deadlines", func(t *testing.T) { testDeadlines(t, newPair) })
	t.Run("ContextDone", func(t *testing.T) { testContextDone(t, newPair) })
	t.Run("NoLeak", func(t *testing.T) { testNoLeak(t, newPair) })
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// echo copies s back to itself and half-closes after the peer's FIN.
func echo(s transport.Stream) error {
	if _, err := io.Copy(s, s); err != nil {
		return err
	}
	return s.CloseWrite()
}

// serveEcho accepts streams on c and echoes each until c closes.
func serveEcho(t *testing.T, c transport.Conn) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			s, err := c.AcceptStream(context.Background())
			if err != nil {
				return
			}
			wg.Go(func() {
				defer s.Close()
				// Context() may lag the error by a moment (QUIC).
				var ce *transport.CloseError
				if err := echo(s); err != nil && !errors.As(err, &ce) && c.Context().Err() == nil {
					t.Errorf("echo: %v", err)
				}
			})
		}
	})
	return &wg
}

// roundTrip writes data on a new stream of c (writing and reading at once),
// half-closes, and checks the echo is identical and ends with EOF.
func roundTrip(ctx context.Context, c transport.Conn, data []byte) error {
	s, err := c.OpenStream(ctx)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer s.Close()
	werr := make(chan error, 1)
	go func() {
		// Odd chunk sizes exercise framing boundaries.
		rest := data
		for len(rest) > 0 {
			n := min(len(rest), 37<<10+13)
			if _, err := s.Write(rest[:n]); err != nil {
				werr <- fmt.Errorf("write: %w", err)
				return
			}
			rest = rest[n:]
		}
		werr <- s.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		return fmt.Errorf("read after %d bytes: %w", len(got), err)
	}
	if err := <-werr; err != nil {
		return err
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("echo differs: sent %d bytes, got %d", len(data), len(got))
	}
	return nil
}

// testStreams: the server (the relay, which opens one stream per viewer) opens
// many streams at once; the client echoes them.
func testStreams(t *testing.T, newPair NewPair) {
	client, server := newPair(t)
	serveEcho(t, client)
	ctx := ctxT(t, 60*time.Second)
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		size := 512 << 10
		if i == 0 {
			size = 8 << 20
		}
		data := randBytes(t, size)
		wg.Go(func() {
			if err := roundTrip(ctx, server, data); err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// testClientStream: the client (the agent's control stream) opens streams too.
func testClientStream(t *testing.T, newPair NewPair) {
	client, server := newPair(t)
	serveEcho(t, server)
	ctx := ctxT(t, 30*time.Second)
	for i := range 3 {
		if err := roundTrip(ctx, client, randBytes(t, 100<<10+i)); err != nil {
			t.Fatal(err)
		}
	}
}

func readAllString(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v (after %q)", err, b)
	}
	return string(b)
}

// openPair opens a stream on a and accepts it on b; the opener writes hello
// first so that every implementation announces the stream.
func openPair(t *testing.T, a, b transport.Conn) (sa, sb transport.Stream) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	sa, err := a.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sa.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	sb, err = b.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(sb, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("hello: %q %v", buf, err)
	}
	t.Cleanup(func() { sa.Close(); sb.Close() })
	return sa, sb
}

func testHalfClose(t *testing.T, newPair NewPair) {
	client, server := newPair(t)
	t.Run("OpenerFinishesFirst", func(t *testing.T) {
		a, b := openPair(t, server, client)
		if _, err := a.Write([]byte("request")); err != nil {
			t.Fatal(err)
		}
		if err := a.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if got := readAllString(t, b); got != "request" {
			t.Fatalf("b read %q", got)
		}
		// b may still write after a's FIN, and a still reads.
		for _, part := range []string{"res", "ponse"} {
			if _, err := b.Write([]byte(part)); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if got := readAllString(t, a); got != "response" {
			t.Fatalf("a read %q", got)
		}
	})
	t.Run("AccepterFinishesFirst", func(t *testing.T) {
		a, b := openPair(t, client, server)
		if _, err := b.Write([]byte("banner")); err != nil {
			t.Fatal(err)
		}
		if err := b.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if got := readAllString(t, a); got != "banner" {
			t.Fatalf("a read %q", got)
		}
		if _, err := a.Write([]byte("late")); err != nil {
			t.Fatal(err)
		}
		if err := a.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if got := readAllString(t, b); got != "late" {
			t.Fatalf("b read %q", got)
		}
	})
}

// testCloseKeepsFIN: Close right after CloseWrite must not discard what was
// sent (the gateway closes a splice as soon as both copies end).
func testCloseKeepsFIN(t *testing.T, newPair NewPair) {
	client, server := newPair(t)
	a, b := openPair(t, server, client)
	data := randBytes(t, 1<<20)
	werr := make(chan error, 1)
	go func() {
		if _, err := a.Write(data); err != nil {
			werr <- err
			return
		}
		if err := a.CloseWrite(); err != nil {
			werr <- err
			return
		}
		werr <- a.Close()
	}()
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatalf("read after %d bytes: %v", len(got), err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, want %d identical", len(got), len(data))
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
}

// readUntilErr reads s until an error, with a deadline so a hang fails.
func readUntilErr(t *testing.T, s transport.Stream) error {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, s)
	if err == nil {
		return io.EOF // io.Copy hides EOF
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("no error after the peer aborted: %v", err)
	}
	return err
}

// writeUntilErr writes to s until an error, with a deadline so a hang fails.
func writeUntilErr(t *testing.T, s transport.Stream) error {
	t.Helper()
	s.SetWriteDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 16<<10)
	for {
		if _, err := s.Write(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("writes still accepted 10 s after the peer aborted: %v", err)
			}
			return err
		}
	}
}

func testAbort(t *testing.T, newPair NewPair) {
	client, server := newPair(t)
	for _, tc := range []struct {
		name string
		a, b transport.Conn
	}{{"ByOpener", server, client}, {"ByAccepter", client, server}} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := openPair(t, tc.a, tc.b)
			const code = 7
			a.Abort(code)
			err := readUntilErr(t, b)
			if err == io.EOF {
				t.Fatal("peer read a clean EOF after Abort")
			}
			var se *transport.StreamError
			if !errors.As(err, &se) || !se.Remote {
				t.Fatalf("peer read error %v (%T), want a remote *transport.StreamError", err, err)
			}
			if se.Code != code {
				t.Errorf("code %d, want %d", se.Code, code)
			}
			if err := writeUntilErr(t, b); err == nil {
				t.Fatal("peer can still write")
			}
			// The aborting side's own calls fail too.
			if _, err := a.Write([]byte("x")); err == nil {
				t.Error("write after Abort succeeded")
			}
		})
	}
}

// testCloseIsNotEOF: Close without CloseWrite is an abort, never a clean end.
func testCloseIsNotEOF(t *testing.T, newPair NewPair) {
	client, server := newPair(t)
	a, b := openPair(t, client, server)
	if _, err := a.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	a.Close()
	err := readUntilErr(t, b)
	if err == io.EOF {
		t.Fatal("peer read a clean EOF after Close without CloseWrite")
	}
	var se *transport.StreamError
	if !errors.As(err, &se) || !se.Remote || se.Code != transport.CodeStreamClosed {
		t.Fatalf("peer read error %v, want remote *transport.StreamError code %d", err, transport.CodeStreamClosed)
	}
}

func testDatagrams(t *testing.T, newPair NewPair) {
	client, server := newPair(t)
	ctx := ctxT(t, 20*time.Second)
	for _, dir := range []struct {
		name     string
		from, to transport.Conn
	}{{"ClientToServer", client, server}, {"ServerToClient", server, client}} {
		t.Run(dir.name, func(t *testing.T) {
			for _, size := range []int{1, 100, transport.MaxDatagram} {
				want := randBytes(t, size)
				got := sendDatagramUntilReceived(t, ctx, dir.from, dir.to, want)
				if !bytes.Equal(got, want) {
					t.Fatalf("size %d: received %d different bytes", size, len(got))
				}
			}
			big := make([]byte, transport.MaxDatagram+1)
			if err := dir.from.SendDatagram(big); !errors.Is(err, transport.ErrDatagramTooLarge) {
				t.Fatalf("oversize datagram: %v, want ErrDatagramTooLarge", err)
			}
		})
	}
}

// sendDatagramUntilReceived resends want (datagrams are unreliable, and QUIC
// refuses full-size ones until path MTU discovery ran) until the peer gets it.
func sendDatagramUntilReceived(t *testing.T, ctx context.Context, from, to transport.Conn, want []byte) []byte {
	t.Helper()
	var lastErr error
	for {
		lastErr = from.SendDatagram(want)
		if lastErr != nil && !errors.Is(lastErr, transport.ErrDatagramTooLarge) {
			t.Fatalf("send %d bytes: %v", len(want), lastErr)
		}
		rctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		got, err := to.ReceiveDatagram(rctx)
		cancel()
		if err == nil && len(got) == len(want) {
			return got
		}
		if ctx.Err() != nil {
			t.Fatalf("datagram of %d bytes never arrived (last send: %v)", len(want), lastErr)
		}
	}
}

func testCloseWithError(t *testing.T, newPair NewPair) {
	for _, tc := range []struct {
		name       string
		clientSide bool
	}{{"ByClient", true}, {"ByServer", false}} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := newPair(t)
			closer, peer := server, client
			if tc.clientSide {
				closer, peer = client, server
			}
			accepted := make(chan error, 1)
			go func() {
				_, err := peer.AcceptStream(context.Background())
				accepted <- err
			}()
			const code, msg = 4242, "going away: test"
			if err := closer.CloseWithError(code, msg); err != nil {
				t.Fatal(err)
			}
			if err := closer.CloseWithError(1, "again"); err != nil {
				t.Errorf("second CloseWithError: %v", err)
			}
			err := <-accepted
			var ce *transport.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("peer's AcceptStream: %v (%T), want *transport.CloseError", err, err)
			}
			if ce.Code != code || ce.Msg != msg || !ce.Remote {
				t.Fatalf("peer saw %+v, want code %d msg %q remote", ce, code, msg)
			}
			<-peer.Context().Done()
			if !errors.As(context.Cause(peer.Context()), &ce) || ce.Code != code || !ce.Remote {
				t.Fatalf("peer's context cause %v", context.Cause(peer.Context()))
			}
			// Later calls on the peer fail the same way.
			_, err = peer.OpenStream(ctxT(t, 5*time.Second))
			if !errors.As(err, &ce) || ce.Code != code {
				// An implementation may fail OpenStream only at the first write;
				// it must not succeed in writing, though.
				if err == nil {
					t.Fatal("OpenStream succeeded on a closed connection")
				}
			}
			if _, err := peer.ReceiveDatagram(ctxT(t, 5*time.Second)); !errors.As(err, &ce) {
				t.Errorf("ReceiveDatagram after close: %v, want *transport.CloseError", err)
			}
			<-closer.Context().Done()
			if !errors.As(context.Cause(closer.Context()), &ce) || ce.Remote || ce.Code != code {
				t.Errorf("closer's context cause %v, want local *CloseError code %d", context.Cause(closer.Context()), code)
			}
		})
	}
}

func testExporter(t *testing.T, newPair NewPair) {
	c1, s1 := newPair(t)
	c2, _ := newPair(t)
	const label = "EXPORTER-porthole-test"
	ek := func(c transport.Conn) []byte {
		b, err := c.ExportKeyingMaterial(label, []byte("ctx"), 32)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b, other := ek(c1), ek(s1), ek(c2)
	if !bytes.Equal(a, b) {
		t.Fatal("client and server export different keying material")
	}
	if bytes.Equal(a, other) {
		t.Fatal("two connections export the same keying material")
	}
	if len(a) != 32 || bytes.Equal(a, make([]byte, 32)) {
		t.Fatalf("exporter returned %x", a)
	}
	for _, c := range []transport.Conn{c1, s1} {
		if c.Transport() == "" || c.LocalAddr() == nil || c.RemoteAddr() == nil {
			t.Errorf("Transport %q, LocalAddr %v, RemoteAddr %v", c.Transport(), c.LocalAddr(), c.RemoteAddr())
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func testDeadlines(t *testing.T, newPair NewPair) {
	client, server := newPair(t)
	a, b := openPair(t, server, client)

	// Read deadline: fails in time, and the stream works afterwards.
	start := time.Now()
	b.SetReadDeadline(start.Add(50 * time.Millisecond))
	if _, err := b.Read(make([]byte, 10)); !isTimeout(err) {
		t.Fatalf("read past deadline: %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("read deadline took %v", d)
	}
	b.SetReadDeadline(time.Time{})
	if _, err := a.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "after" {
		t.Fatalf("read after clearing the deadline: %q %v", buf, err)
	}

	// Write deadline: the peer doesn't read, flow control stops the writer.
	a.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	chunk := make([]byte, 64<<10)
	var err error
	for written := 0; written < 1<<30 && err == nil; written += len(chunk) {
		_, err = a.Write(chunk)
	}
	if !isTimeout(err) {
		t.Fatalf("write into a stream nobody reads: %v, want a timeout", err)
	}

	// SetDeadline covers both.
	b.SetDeadline(time.Now().Add(-time.Second))
	if _, err := b.Write([]byte("x")); !isTimeout(err) {
		t.Errorf("write past SetDeadline: %v", err)
	}
	// The read may first drain what a sent; past the deadline it must fail.
	if _, err := b.Read(make([]byte, 10)); !isTimeout(err) {
		t.Errorf("read past SetDeadline: %v", err)
	}
}

func testContextDone(t *testing.T, newPair NewPair) {
	client, server := newPair(t)
	for _, c := range []transport.Conn{client, server} {
		if c.Context().Err() != nil {
			t.Fatal("context done before close")
		}
	}
	client.CloseWithError(0, "")
	for _, c := range []transport.Conn{client, server} {
		select {
		case <-c.Context().Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s side's context not done 10 s after close", c.Transport())
		}
		if context.Cause(c.Context()) == nil {
			t.Error("no cause")
		}
	}
}

// testNoLeak: after a pair has carried streams and datagrams and closed, the
// goroutine count returns to where it was.
func testNoLeak(t *testing.T, newPair NewPair) {
	before := runtime.NumGoroutine()
	t.Run("Use", func(t *testing.T) {
		for range 3 {
			client, server := newPair(t)
			serveEcho(t, client)
			ctx := ctxT(t, 20*time.Second)
			if err := roundTrip(ctx, server, randBytes(t, 256<<10)); err != nil {
				t.Fatal(err)
			}
			sendDatagramUntilReceived(t, ctx, client, server, []byte("ping"))
			// A stream left open and a blocked accept must end with the conn too.
			s, err := server.OpenStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			s.Write([]byte("dangling"))
			go server.AcceptStream(context.Background())
			go client.ReceiveDatagram(context.Background())
			client.CloseWithError(0, "done")
			server.CloseWithError(0, "done")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines after close, %d before:\n%s", n, before, trimStacks(string(buf)))
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
}

// trimStacks keeps the goroutine dump readable.
func trimStacks(s string) string {
	if len(s) > 20000 {
		s = s[:20000] + "\n..."
	}
	return strings.TrimSpace(s)
}
