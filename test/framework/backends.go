package framework

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/porthole-dev/porthole/internal/camsim"
)

// Backend is a mock LAN service: a TCP listener on 127.0.0.1 running a
// handler per connection.
type Backend struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex // guards conns
	conns map[net.Conn]bool
}

// Handler serves one backend connection; the connection is closed after it
// returns.
type Handler func(*net.TCPConn)

// Serve starts a backend on addr ("127.0.0.1:0" for any port); Close stops it.
func Serve(addr string, handle Handler) (*Backend, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	b := &Backend{ln: ln, conns: map[net.Conn]bool{}}
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
			b.wg.Go(func() {
				defer func() {
					b.mu.Lock()
					delete(b.conns, c)
					b.mu.Unlock()
					c.Close()
				}()
				handle(c.(*net.TCPConn))
			})
		}
	}()
	return b, nil
}

// StartBackend starts a backend for a test on a free port of 127.0.0.1; it is
// closed when the test ends.
func StartBackend(tb testing.TB, handle Handler) *Backend {
	tb.Helper()
	b, err := Serve("127.0.0.1:0", handle)
	if err != nil {
		tb.Fatalf("framework: %v", err)
	}
	tb.Cleanup(b.Close)
	return b
}

// Addr is the backend's host:port.
func (b *Backend) Addr() string { return b.ln.Addr().String() }

// Conns is the number of connections being served now.
func (b *Backend) Conns() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// Close stops accepting, closes every connection and waits for the handlers.
func (b *Backend) Close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// Echo echoes, honouring half-close.
func Echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

// ReadAll reads until the viewer half-closes, then answers "<bytes> <sha256
// hex>\n": it can only answer if the FIN came through.
func ReadAll(c *net.TCPConn) {
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return
	}
	fmt.Fprintf(c, "%d %s\n", n, hex.EncodeToString(h.Sum(nil)))
	c.CloseWrite()
}

// Hang accepts and never answers; the connection ends when the viewer side
// closes.
func Hang(c *net.TCPConn) { io.Copy(io.Discard, c) }

// Greeter writes one line, "<banner> peer=<remote ip:port>", and closes: the
// lab's stand-in for a LAN service (the peer shows which address it saw).
func Greeter(banner string) Handler {
	return func(c *net.TCPConn) {
		fmt.Fprintf(c, "%s peer=%s\n", banner, c.RemoteAddr())
	}
}

// Source writes size bytes (a repeating pattern) and closes: a camera sending
// a recording as fast as the path allows.
func Source(size int64) Handler {
	return func(c *net.TCPConn) {
		buf := make([]byte, 256<<10)
		for i := range buf {
			buf[i] = byte(i)
		}
		for sent := int64(0); sent < size; {
			n, err := c.Write(buf[:min(int64(len(buf)), size-sent)])
			sent += int64(n)
			if err != nil {
				return
			}
		}
		c.CloseWrite()
	}
}

// Camera is a simulated IP camera (internal/camsim) on 127.0.0.1: an HTML
// page, snapshot and MJPEG over HTTP, MJPEG over RTSP at /stream1.
type Camera struct {
	// HTTPAddr and RTSPAddr are host:port of its two listeners.
	HTTPAddr, RTSPAddr string
	cam                *camsim.Camera
	stop               context.CancelFunc
	done               chan error
}

// StartCamera starts a simulated camera for a test; it stops when the test
// ends.
func StartCamera(tb testing.TB, cfg camsim.Config) *Camera {
	tb.Helper()
	c, err := NewCamera(cfg)
	if err != nil {
		tb.Fatalf("framework: %v", err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("framework: camera: %v", err)
		}
	})
	return c
}

// NewCamera starts a simulated camera; Close stops it.
func NewCamera(cfg camsim.Config) (*Camera, error) {
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("camera: %w", err)
	}
	rtspLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		httpLn.Close()
		return nil, fmt.Errorf("camera: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Camera{
		HTTPAddr: httpLn.Addr().String(), RTSPAddr: rtspLn.Addr().String(),
		cam: camsim.New(cfg), stop: cancel, done: make(chan error, 1),
	}
	go func() { c.done <- c.cam.Run(ctx, httpLn, rtspLn) }()
	return c, nil
}

// Close stops the camera and waits for it.
func (c *Camera) Close() error {
	c.stop()
	err := <-c.done
	c.done <- nil // idempotent: a second Close sees nil
	if cerr := c.cam.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, camsim.ErrClosed) {
		err = nil
	}
	return err
}
