package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel/transport"
	"golang.org/x/time/rate"
)

// connErr prefers the connection's close reason over a stream's error: a read
// that failed because the connection closed should say why it closed.
func connErr(c transport.Conn, err error) error {
	if cause := context.Cause(c.Context()); cause != nil {
		return cause
	}
	return err
}

// describeClose says in words why a session ended.
func describeClose(err error) string {
	var ce *transport.CloseError
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return "closed"
	case errors.As(err, &ce):
		who := "locally"
		if ce.Remote {
			who = "by the peer"
		}
		if ce.Msg != "" {
			return ce.Msg + " (" + who + ")"
		}
		return proto.CloseCode(ce.Code).String() + " (" + who + ")"
	case errors.Is(err, transport.ErrIdleTimeout):
		return "no packets from the peer for the idle timeout"
	case errors.Is(err, transport.ErrPeerRestarted):
		return "the peer restarted"
	}
	return err.Error()
}

// closeCode is the application code of a connection closed by the peer, if any.
func closeCode(err error) (proto.CloseCode, bool) {
	var ce *transport.CloseError
	if errors.As(err, &ce) && ce.Remote {
		return proto.CloseCode(ce.Code), true
	}
	return 0, false
}

// addrPort converts a transport address (UDP or TCP) to an AddrPort, unmapped.
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		if a != nil {
			ap, _ = netip.ParseAddrPort(a.String())
		}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// logLimiter lets a burst of log lines through, then one per interval, and
// counts the rest, so a flood of refusals costs a few lines, not a line each.
type logLimiter struct {
	lim *rate.Limiter

	mu         sync.Mutex // guards suppressed
	suppressed int
}

func newLogLimiter(burst int, every time.Duration) *logLimiter {
	return &logLimiter{lim: rate.NewLimiter(rate.Every(every), burst)}
}

// allow reports whether to log now, and how many lines were suppressed since the last one.
func (l *logLimiter) allow() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.lim.Allow() {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.suppressed = 0
	return true, n
}
