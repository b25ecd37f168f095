package gateway

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
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

// spliceChunk is how much the kernel splices between two counter updates on
// the TCP-to-TCP path: small enough that the status page sees even a 500
// kbit/s stream move every second, large enough to cost nothing measurable
// (each chunk is one more return from ReadFrom; the splice calls are the same).
const spliceChunk = 64 << 10

// meter counts one direction of a splice while it runs.
type meter struct {
	// n gets each chunk's bytes as they are written; nil: not counted.
	n *atomic.Int64
	// first, if set, is called once when the first byte has been read: the
	// connection is no longer idle.
	first func()
}

// Splice copies a->b and b->a until both directions end, honouring half-close: when
// one side stops sending, the other side's write half is closed and the reverse
// direction keeps flowing. On an error in either direction both sides are aborted
// (a TCP side gets a reset, not a FIN, so a viewer can tell a failure from the end).
// Both conns are closed when Splice returns. It returns the bytes copied each way and
// the first error other than a clean end of stream.
func Splice(a, b Conn) (aToB, bToA int64, err error) {
	return splice(a, b, meter{}, meter{})
}

func splice(a, b Conn, ab, ba meter) (aToB, bToA int64, err error) {
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
		n, e := copyHalf(b, a, ab)
		aToB = n
		if e != nil {
			fail(e)
		}
	}()
	n, e := copyHalf(a, b, ba)
	bToA = n
	if e != nil {
		fail(e)
	}
	wg.Wait()
	a.Close()
	b.Close()
	return aToB, bToA, first
}

// copyHalf copies src to dst, then closes dst's write side. Between two TCP
// sockets the kernel splices (no copy through user space); otherwise a pooled
// buffer carries the bytes. Either way m counts them as they go.
func copyHalf(dst, src Conn, m meter) (int64, error) {
	dt, ok1 := dst.(*net.TCPConn)
	st, ok2 := src.(*net.TCPConn)
	fast := ok1 && ok2
	var n int64
	var err error
	eof := false
	if !fast || m.first != nil {
		// On the fast path only the first chunk comes through the buffer, to
		// see the first byte; splice would wait for a whole chunk.
		n, eof, err = copyBuffered(dst, src, m, fast)
	}
	if err == nil && !eof && fast {
		var k int64
		k, err = spliceTCP(dt, st, m.n)
		n += k
	}
	if err != nil {
		return n, err
	}
	return n, dst.CloseWrite()
}

// copyBuffered copies through a pooled buffer until src ends (eof), an error,
// or, with once, after the first chunk.
func copyBuffered(dst io.Writer, src io.Reader, m meter, once bool) (n int64, eof bool, err error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		k, rerr := src.Read(buf)
		if k > 0 {
			if m.first != nil {
				m.first()
				m.first = nil
			}
			w, werr := dst.Write(buf[:k])
			n += int64(w)
			if m.n != nil {
				m.n.Add(int64(w))
			}
			if werr == nil && w != k {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return n, false, werr
			}
		}
		if rerr == io.EOF {
			return n, true, nil
		}
		if rerr != nil {
			return n, false, rerr
		}
		if once && k > 0 {
			return n, false, nil
		}
	}
}

// spliceTCP lets the kernel move src to dst in chunks of spliceChunk, adding
// each chunk to total. TCPConn.ReadFrom splices from an io.LimitedReader of a
// TCPConn, so chunking costs no copy and the reader is allocated once.
func spliceTCP(dst, src *net.TCPConn, total *atomic.Int64) (int64, error) {
	lr := &io.LimitedReader{R: src}
	var n int64
	for {
		lr.N = spliceChunk
		k, err := dst.ReadFrom(lr)
		n += k
		if total != nil && k > 0 {
			total.Add(k)
		}
		if err != nil {
			return n, err
		}
		if lr.N > 0 { // src ended before the chunk was full
			return n, nil
		}
	}
}

// abort closes c, with a TCP reset where c is TCP.
func abort(c Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
