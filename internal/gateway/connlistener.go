package gateway

import (
	"context"
	"net"
	"sync"
)

// ConnListener is a net.Listener whose connections are handed to it one by
// one (Push): a Handler that runs a server library (net/http, gortsplib) on
// the viewers the gateway admitted gives it a ConnListener to serve, and
// pushes each Viewer's Conn.
type ConnListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

var _ net.Listener = (*ConnListener)(nil)

// NewConnListener returns a ConnListener whose Addr is addr (some libraries
// want a *net.TCPAddr there); nil means an address that names the gateway.
func NewConnListener(addr net.Addr) *ConnListener {
	if addr == nil {
		addr = gatewayAddr{}
	}
	return &ConnListener{ch: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

// Push hands c to the next Accept and reports whether one took it before
// the listener closed or ctx ended.
func (l *ConnListener) Push(ctx context.Context, c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
	case <-ctx.Done():
	}
	return false
}

// Accept returns the next pushed conn, or net.ErrClosed after Close.
func (l *ConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close makes Accept and Push return; it is idempotent.
func (l *ConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr is the address given to NewConnListener.
func (l *ConnListener) Addr() net.Addr { return l.addr }

type gatewayAddr struct{}

func (gatewayAddr) Network() string { return "gateway" }
func (gatewayAddr) String() string  { return "gateway" }
