package gateway

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(tb testing.TB) (*net.TCPConn, *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); acc <- c }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	s := <-acc
	if s == nil {
		tb.Fatal("accept failed")
	}
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// BenchmarkSpliceTCP moves bytes socket to socket as the gateway's fast path
// does (counted per chunk), beside a plain io.Copy (counted at the end) for
// comparison: the two should be within noise of each other.
func BenchmarkSpliceTCP(b *testing.B) {
	const total = 64 << 20
	for _, bc := range []struct {
		name string
		copy func(dst, src *net.TCPConn, n *atomic.Int64) (int64, error)
	}{
		{"chunked", spliceTCP},
		{"io.Copy", func(dst, src *net.TCPConn, _ *atomic.Int64) (int64, error) { return io.Copy(dst, src) }},
		// The path of tunnel streams: not both TCP, so through the pooled buffer.
		{"buffered", func(dst, src *net.TCPConn, n *atomic.Int64) (int64, error) {
			k, _, err := copyBuffered(pipeConn{dst}, pipeConn{src}, meter{n: n}, false)
			return k, err
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(total)
			b.ReportAllocs()
			for b.Loop() {
				w, src := tcpPair(b)
				dst, r := tcpPair(b)
				go func() {
					buf := make([]byte, 256<<10)
					for sent := 0; sent < total; sent += len(buf) {
						w.Write(buf)
					}
					w.Close()
				}()
				done := make(chan int64)
				go func() { n, _ := io.Copy(io.Discard, r); done <- n }()
				var cnt atomic.Int64
				if _, err := bc.copy(dst, src, &cnt); err != nil {
					b.Fatal(err)
				}
				dst.CloseWrite()
				if n := <-done; n != total {
					b.Fatalf("moved %d of %d", n, total)
				}
				for _, c := range []net.Conn{w, src, dst, r} {
					c.Close()
				}
			}
		})
	}
}
