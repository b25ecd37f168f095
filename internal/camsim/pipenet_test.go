package camsim

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// pipeListener is an in-memory net.Listener made of net.Pipe connections, so HTTP tests run
// inside a testing/synctest bubble (real sockets are not durably blocking).
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	server, client := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
	case <-ctx.Done():
	}
	_ = server.Close()
	_ = client.Close()
	return nil, net.ErrClosed
}

// client returns an HTTP client whose connections go to l.
func (l *pipeListener) client() (*http.Client, *http.Transport) {
	tr := &http.Transport{DialContext: l.dial, DisableCompression: true}
	return &http.Client{Transport: tr}, tr
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }
