package flood

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/test/framework"
)

// serveFunc accepts on 127.0.0.1 and runs handle for every connection until
// the test ends.
func serveFunc(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards conns
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() { handle(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func waitReport(t *testing.T, v *Viewer, cond func(ViewerReport) bool) {
	t.Helper()
	framework.Eventually(t, 20*time.Second, func() bool { return cond(v.Report()) }, "viewer: %s", v.Report())
}

func TestViewerServed(t *testing.T) {
	echo := framework.StartBackend(t, framework.Echo)
	v := WatchViewer(context.Background(), ViewerConfig{From: "127.0.0.2", Addr: echo.Addr(), Every: time.Millisecond})
	waitReport(t, v, func(r ViewerReport) bool { return r.Fresh >= 2 && len(r.RTTs) >= 10 })
	if r := v.Stop(); !r.Served() {
		t.Errorf("viewer of an echo server not served: %s", r)
	}
}

// TestViewerSeesResets: a watch that can't fail proves nothing.
func TestViewerSeesResets(t *testing.T) {
	addr := serveFunc(t, func(c net.Conn) { c.(*net.TCPConn).SetLinger(0); c.Close() })
	v := WatchViewer(context.Background(), ViewerConfig{Addr: addr, Every: time.Millisecond})
	waitReport(t, v, func(r ViewerReport) bool { return len(r.Failures) >= 3 })
	if r := v.Stop(); r.Served() {
		t.Errorf("a viewer whose connections are reset counted as served: %s", r)
	}
}

func TestViewerSeesWrongBytes(t *testing.T) {
	addr := serveFunc(t, func(c net.Conn) {
		b := make([]byte, 64)
		for {
			n, err := c.Read(b)
			if err != nil {
				return
			}
			clear(b[:n])
			c.Write(b[:n])
		}
	})
	v := WatchViewer(context.Background(), ViewerConfig{Addr: addr, Every: time.Millisecond})
	waitReport(t, v, func(r ViewerReport) bool { return len(r.Failures) >= 2 })
	if r := v.Stop(); r.Served() || len(r.RTTs) > 0 {
		t.Errorf("wrong echoes counted: %s", r)
	}
}

func TestIdleHoldsAndRedials(t *testing.T) {
	held := serveFunc(t, func(c net.Conn) { c.Read(make([]byte, 1)) })
	f := StartIdle(context.Background(), IdleConfig{From: "127.0.0.1", Addr: held, Conns: 50, Parallel: 8})
	framework.Eventually(t, 20*time.Second, func() bool { return f.Stats().MaxHeld == 50 }, "held %s", f.Stats())
	if r := f.Stop(); r.Closed != 0 || r.Dialed != 50 {
		t.Errorf("a server that holds connections: %s", r)
	}

	closing := serveFunc(t, func(c net.Conn) { c.Close() })
	f = StartIdle(context.Background(), IdleConfig{Addr: closing, Conns: 20, Parallel: 4, Rate: 500})
	framework.Eventually(t, 20*time.Second, func() bool { return f.Stats().Closed >= 60 }, "closed %s", f.Stats())
	if r := f.Stop(); r.Dialed < 60 {
		t.Errorf("closed connections not dialled again: %s", r)
	}
}

func TestPreAuthTCP(t *testing.T) {
	addr := serveFunc(t, func(c net.Conn) { c.Close() })
	r := PreAuth(context.Background(), PreAuthConfig{Relay: addr, TCP: 30, Parallel: 5, Hold: 10 * time.Second})
	if r.TCPConnects != 30 || r.TCPClosed != 30 || r.TCPErrors != 0 {
		t.Errorf("connects to a closing server: %s", r)
	}
	held := serveFunc(t, func(c net.Conn) { c.Read(make([]byte, 1)) })
	r = PreAuth(context.Background(), PreAuthConfig{Relay: held, TCP: 4, Parallel: 4, Hold: 200 * time.Millisecond})
	if r.TCPConnects != 4 || r.TCPClosed != 0 {
		t.Errorf("connects to a server that holds them: %s", r)
	}
}
