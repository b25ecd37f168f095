package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
)

// Service kinds, as in agent.yaml's kind:.
const (
	KindTCP  = "tcp"
	KindHTTP = "http"
	KindRTSP = "rtsp"
)

// A Handler serves the viewers of one kind of service once the gateway has
// let them through its limits, sniffing and access rule.
type Handler interface {
	// Serve handles one viewer until the connection ends. The gateway closes
	// v.Conn afterwards, whatever Serve did with it.
	Serve(ctx context.Context, v *Viewer) error
}

// Dialer reaches a service's backend for one viewer: the camera on the LAN
// (the agent) or a stream through the agent's tunnel (the relay).
type Dialer interface {
	DialBackend(ctx context.Context, viewer netip.AddrPort) (Conn, error)
}

// DialFunc is a Dialer as a function.
type DialFunc func(ctx context.Context, viewer netip.AddrPort) (Conn, error)

// DialBackend calls f.
func (f DialFunc) DialBackend(ctx context.Context, viewer netip.AddrPort) (Conn, error) {
	return f(ctx, viewer)
}

var _ Dialer = DialFunc(nil)

// ErrUnknownKind is returned by HandlerFor for a kind it has no handler for.
var ErrUnknownKind = errors.New("unknown service kind")

// builtin are the handlers that need nothing but the Dialer. The http and
// rtsp handlers will need their own settings (TLS, viewer logins, the camera's
// login), so the agent builds those and passes them as Config.Handler; they
// are registered here by kind only when they can run on defaults.
var builtin = map[string]Handler{
	KindTCP: TCP{},
}

// HandlerFor returns the built-in Handler for a service kind ("" is tcp).
func HandlerFor(kind string) (Handler, error) {
	if kind == "" {
		kind = KindTCP
	}
	h, ok := builtin[kind]
	if !ok {
		return nil, fmt.Errorf("%w %q: this gateway serves %s", ErrUnknownKind, kind, KindTCP)
	}
	return h, nil
}

// TCP is the handler of kind tcp: the viewer's bytes as they are, spliced to
// the backend with half-close.
type TCP struct{}

// Serve dials the backend, replays what the gateway read while sniffing, and
// splices until both directions end.
func (TCP) Serve(ctx context.Context, v *Viewer) error {
	back, err := v.DialBackend(ctx)
	if err != nil {
		v.Log.Warn("viewer could not be connected", "viewer", v.Addr, "err", err)
		// A reset, not a FIN: the viewer must not take an unreachable
		// backend for a stream that ended.
		reset(v.Conn)
		return err
	}
	in, out, err := v.Splice(back)
	if err != nil {
		v.Log.Debug("viewer connection ended with error", "viewer", v.Addr, "in", in, "out", out, "err", err)
	} else {
		v.Log.Debug("viewer connection ended", "viewer", v.Addr, "in", in, "out", out)
	}
	return err
}

var _ Handler = TCP{}

// Viewer is one viewer's connection as a Handler gets it.
type Viewer struct {
	// Conn is the viewer's connection (after TLS, where the service has it).
	Conn net.Conn
	// Addr is the viewer's address: the peer, or for a tunnel stream the
	// address the relay saw.
	Addr netip.AddrPort
	// Service names the service.
	Service string
	// Peeked are bytes the gateway already read from Conn while sniffing; the
	// viewer's stream starts with them, then whatever Conn still holds.
	Peeked []byte
	// Log is the service's logger.
	Log *slog.Logger
	// Authenticated is the Porthole viewer this connection already belongs
	// to, known before any byte was read (a WireGuard peer's key: see
	// Authenticator); "" means the viewer must log in as usual. Handlers
	// with viewer logins skip the login for it but still apply the
	// service's viewers list.
	Authenticated string

	c *conn
}

// An Authenticator is a connection whose viewer is known from how it arrived:
// the agent's WireGuard endpoint knows each peer by its key, and each key
// belongs to one viewer. The gateway copies it into Viewer.Authenticated. Only
// conns made by the daemon itself implement it; a viewer's bytes never can.
type Authenticator interface {
	AuthenticatedViewer() string
}

// authenticatedViewer is nc's viewer if nc is an Authenticator, else "".
func authenticatedViewer(nc net.Conn) string {
	if a, ok := nc.(Authenticator); ok {
		return a.AuthenticatedViewer()
	}
	return ""
}

// DialBackend connects to the service's backend, bounded by the listener's
// DialTimeout.
func (v *Viewer) DialBackend(ctx context.Context) (Conn, error) {
	l := v.c.l
	ctx, cancel := context.WithTimeout(ctx, l.cfg.DialTimeout)
	defer cancel()
	return l.dial.DialBackend(ctx, v.Addr)
}

// Splice writes Peeked to back, then copies both ways with half-close until
// both directions end (see Splice), counting bytes in the listener's Stats as
// they move. Both conns are closed when it returns.
func (v *Viewer) Splice(back Conn) (in, out int64, err error) {
	if tc, ok := back.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if len(v.Peeked) > 0 {
		n, err := back.Write(v.Peeked)
		v.c.l.bytesIn.Add(int64(n))
		if err != nil {
			back.Close()
			v.Conn.Close()
			return int64(n), 0, err
		}
	}
	vc := halfCloser(v.Conn)
	var first func()
	if v.c.pending() {
		first = v.c.start
	}
	in, out, err = splice(vc, back,
		meter{n: &v.c.l.bytesIn, first: first},
		meter{n: &v.c.l.bytesOut, first: first})
	return in + int64(len(v.Peeked)), out, err
}

// Count adds bytes that a handler moved itself (one that doesn't Splice) to
// the listener's Stats, and marks the connection as no longer idle.
func (v *Viewer) Count(in, out int64) {
	if in > 0 || out > 0 {
		v.c.start()
	}
	v.c.l.bytesIn.Add(in)
	v.c.l.bytesOut.Add(out)
}

// halfCloser gives c a CloseWrite: its own (*net.TCPConn, *tls.Conn), or a
// full Close for conns that have none, so that the viewer still learns that
// the backend has finished.
func halfCloser(c net.Conn) Conn {
	if hc, ok := c.(Conn); ok {
		return hc
	}
	return closeOnCloseWrite{c}
}

type closeOnCloseWrite struct{ net.Conn }

func (c closeOnCloseWrite) CloseWrite() error { return c.Close() }
