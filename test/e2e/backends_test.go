package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
)

var (
	syscallECONNREFUSED = syscall.ECONNREFUSED
	sigterm             = syscall.SIGTERM
	sigkill             = syscall.SIGKILL
)

// backend is a mock LAN service on 127.0.0.1.
type backend struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex // guards conns
	conns map[net.Conn]bool
}

// Addr is host:port.
func (b *backend) Addr() string { return b.ln.Addr().String() }

func startBackend(t testing.TB, handle func(*net.TCPConn)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{ln: ln, conns: map[net.Conn]bool{}}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns[c] = true
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer func() {
					b.mu.Lock()
					delete(b.conns, c)
					b.mu.Unlock()
					c.Close()
				}()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

// echoBackend echoes, honouring half-close.
func echoBackend(t testing.TB) *backend {
	return startBackend(t, func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
}

// readAllBackend reads until the viewer half-closes, then answers
// "<bytes> <sha256 hex>\n": it can only answer if the FIN came through.
func readAllBackend(t testing.TB) *backend {
	return startBackend(t, func(c *net.TCPConn) {
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%d %s\n", n, hex.EncodeToString(h.Sum(nil)))
		c.CloseWrite()
	})
}

// hangBackend accepts and never answers; connections end when the viewer side closes.
func hangBackend(t testing.TB) *backend {
	return startBackend(t, func(c *net.TCPConn) {
		io.Copy(io.Discard, c)
	})
}

// refusingAddr is an address on 127.0.0.1 where nothing listens.
func refusingAddr(t testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
}
