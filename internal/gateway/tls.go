package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// ALPNACME is the ALPN protocol of ACME's TLS-ALPN-01 challenge (RFC 8737).
// A handshake that negotiates it is the CA checking the challenge certificate
// (which Config.TLS's GetCertificate served); the gateway closes it.
const ALPNACME = "acme-tls/1"

// tlsHandshakeRecord is the first byte of every TLS ClientHello (the record
// type "handshake"): any other first byte is not TLS.
const tlsHandshakeRecord = 0x16

// ErrNotTLS: the viewer's first bytes on a TLS service were not a handshake.
var ErrNotTLS = errors.New("viewer did not start a TLS handshake")

// handshake is the TLS stage: it replays peeked into a TLS server on nc and
// completes the handshake by deadline. It returns the *tls.Conn, or nil when
// the connection ended here (not TLS: Config.Plain answered; a failed
// handshake; an ACME challenge answered) with the reason, nil for a
// challenge.
func (l *Listener) handshake(ctx context.Context, c *conn, peeked []byte, deadline time.Time) (*tls.Conn, error) {
	nc := c.nc
	nc.SetDeadline(deadline)
	if len(peeked) == 0 || peeked[0] != tlsHandshakeRecord {
		l.plain.Add(1)
		if l.cfg.Plain != nil {
			l.cfg.Plain(nc, peeked)
			// End the answer with a FIN before closing: a tunnel stream's
			// Close resets what is still unsent (QUIC RESET_STREAM), and a
			// relayed viewer would get a reset instead of the redirect.
			CloseWrite(nc)
		}
		nc.Close()
		return nil, ErrNotTLS
	}
	tc := tls.Server(&prefixConn{Conn: nc, prefix: peeked}, l.cfg.TLS)
	hctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		l.tlsFailed.Add(1)
		l.logTLSFailure(c.viewer, err)
		if os.IsTimeout(err) || errors.Is(err, context.DeadlineExceeded) {
			reset(nc)
		} else {
			nc.Close() // the TLS stack has sent its alert
		}
		return nil, fmt.Errorf("gateway: tls handshake: %w", err)
	}
	if tc.ConnectionState().NegotiatedProtocol == ALPNACME {
		// The CA saw its challenge certificate in the handshake; nothing
		// else is spoken on acme-tls/1 (RFC 8737 section 3).
		tc.Close()
		return nil, nil
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		tc.Close()
		return nil, err
	}
	c.start()
	return tc, nil
}

// logTLSFailure logs failed handshakes at most once a second: scanners fail
// handshakes all day long.
func (l *Listener) logTLSFailure(viewer netip.AddrPort, err error) {
	now := time.Now().UnixNano()
	last := l.lastTLSFail.Load()
	if now-last < int64(time.Second) || !l.lastTLSFail.CompareAndSwap(last, now) {
		return
	}
	l.log.Info("viewer TLS handshake failed", "viewer", viewer.Addr(), "err", err,
		"tls_failed_total", l.tlsFailed.Load())
}

// prefixConn reads prefix, then Conn: the bytes the gateway sniffed go back
// into the TLS server.
type prefixConn struct {
	net.Conn
	prefix  []byte
	writing atomic.Int32 // Writes in flight
}

func (p *prefixConn) Write(b []byte) (int, error) {
	p.writing.Add(1)
	defer p.writing.Add(-1)
	return p.Conn.Write(b)
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// NetConn lets reset find the TCP socket under a *tls.Conn.
func (p *prefixConn) NetConn() net.Conn { return p.Conn }

// Close half-closes first where it can: closing the *tls.Conn (an
// http.Server after a Connection: close response) must not lose its last
// records, and a tunnel stream's Close resets what is still unsent. Resets
// meant as resets go to the conn itself (reset), not through here. A Close
// that interrupts a Write (crypto/tls then skips its close_notify) is an
// abort: no FIN, so a cut answer never looks complete to the viewer, and
// CloseWrite never runs beside a Write.
func (p *prefixConn) Close() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok && p.writing.Load() == 0 {
		cw.CloseWrite()
	}
	return p.Conn.Close()
}

// maxRedirectHead bounds the request head RedirectHTTPS reads.
const maxRedirectHead = 8 << 10

// RedirectHTTPS is a Config.Plain for http services: it reads one HTTP
// request head (at most 8 KiB, within the deadline the gateway set) and
// answers 308 Permanent Redirect to https://<Host><path>, on the same port.
// A request without a usable Host header gets 400; bytes that are not HTTP
// get nothing. The gateway closes the connection afterwards.
func RedirectHTTPS(c net.Conn, peeked []byte) {
	r := bufio.NewReader(io.LimitReader(io.MultiReader(bytes.NewReader(peeked), c), maxRedirectHead))
	req, err := http.ReadRequest(r)
	if err != nil {
		return
	}
	if !validHost(req.Host) {
		writePlainResponse(c, "400 Bad Request", "",
			"This port speaks HTTPS. Open it as https://<host>:<port>/ (the request had no usable Host header to redirect to).\n")
		return
	}
	path := req.URL.RequestURI()
	if !strings.HasPrefix(path, "/") {
		path = "/"
	}
	loc := "https://" + req.Host + path
	writePlainResponse(c, "308 Permanent Redirect", loc, "This port speaks HTTPS: "+loc+"\n")
}

func writePlainResponse(c net.Conn, status, location, body string) {
	var b strings.Builder
	b.WriteString("HTTP/1.1 " + status + "\r\n")
	if location != "" {
		b.WriteString("Location: " + location + "\r\n")
	}
	fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	io.WriteString(c, b.String())
}

// validHost accepts a host[:port] made of the characters of DNS names and IP
// literals only, so a Host header can't turn the redirect into a link to
// somewhere else (user@, paths) or split the response (CR LF).
func validHost(h string) bool {
	if h == "" || len(h) > 300 {
		return false
	}
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '.', r == '-', r == '_', r == ':', r == '[', r == ']':
		default:
			return false
		}
	}
	return true
}
