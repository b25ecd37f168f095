package gateway

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Conn is a byte stream with TCP's half-close: CloseWrite ends the write side
// (FIN) while reading goes on. *net.TCPConn is one; the tunnel wraps QUIC streams.
type Conn interface {
	io.ReadWriteCloser
	CloseWrite() error
}

var _ Conn = (*net.TCPConn)(nil)

const bufSize = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// Splice copies a->b and b->a until both directions end, honouring half-close: when
// one side stops sending, the other side's write half is closed and the reverse
// direction keeps flowing. On an error in either direction both sides are aborted
// (a TCP side gets a reset, not a FIN, so a viewer can tell a failure from the end).
// Both conns are closed when Splice returns. It returns the bytes copied each way and
// the first error other than a clean end of stream.
func Splice(a, b Conn) (aToB, bToA int64, err error) {
	var wg sync.WaitGroup
	var errOnce sync.Once
	var first error
	fail := func(e error) {
		errOnce.Do(func() {
			if !errors.Is(e, net.ErrClosed) {
				first = e
			}
			// Unblock the other direction, and tell both ends it failed: a
			// clean FIN would look like the end of the video.
			abort(a)
			abort(b)
		})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, e := copyHalf(b, a)
		bToA = n
		if e != nil {
			fail(e)
		}
	}()
	n, e := copyHalf(a, b)
	aToB = n
	if e != nil {
		fail(e)
	}
	wg.Wait()
	a.Close()
	b.Close()
	return aToB, bToA, first
}

// copyHalf copies src to dst, then closes dst's write side.
func copyHalf(dst, src Conn) (int64, error) {
	var n int64
	var err error
	dt, ok1 := dst.(*net.TCPConn)
	st, ok2 := src.(*net.TCPConn)
	if ok1 && ok2 {
		// TCP to TCP: let the kernel splice.
		n, err = io.Copy(dt, st)
	} else {
		bp := bufPool.Get().(*[]byte)
		// Hide ReaderFrom/WriterTo so the pooled buffer is used.
		n, err = io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
		bufPool.Put(bp)
	}
	if err != nil {
		return n, err
	}
	return n, dst.CloseWrite()
}

// abort closes c, with a TCP reset where c is TCP.
func abort(c Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
