package tcptransport

import (
	"crypto/tls"
	"encoding/binary"
	"net"
	"sync"
)

// sessConn is what yamux reads and writes: the TLS connection, with
//   - the first read error kept, to tell a peer's reset from a local close;
//   - a yamux data frame's 12-byte header and its body written as one TLS
//     write (yamux writes them separately: two records and two syscalls);
//   - Close closing the TCP socket directly (tls.Conn.Close would first try
//     to send close_notify, up to 5 s on a stuck socket; the close frame on the
//     control stream already says goodbye).
type sessConn struct {
	tc  *tls.Conn
	raw net.Conn

	// Only yamux's send goroutine writes; no lock needed for these.
	hdr     [12]byte
	pending bool   // hdr holds a data frame's header whose body comes next
	wbuf    []byte // header+body, reused

	mu      sync.Mutex // guards the fields below
	readErr error
}

func newSessConn(tc *tls.Conn, raw net.Conn) *sessConn {
	return &sessConn{tc: tc, raw: raw}
}

func (c *sessConn) Read(p []byte) (int, error) {
	n, err := c.tc.Read(p)
	if err != nil {
		c.mu.Lock()
		if c.readErr == nil {
			c.readErr = err
		}
		c.mu.Unlock()
	}
	return n, err
}

// firstReadErr is the error that ended reading, if any.
func (c *sessConn) firstReadErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
)

func (c *sessConn) Write(p []byte) (int, error) {
	if c.pending {
		c.pending = false
		c.wbuf = append(append(c.wbuf[:0], c.hdr[:]...), p...)
		if _, err := c.tc.Write(c.wbuf); err != nil {
			return 0, err
		}
		if cap(c.wbuf) > 256<<10 {
			c.wbuf = nil // don't keep a rare huge buffer
		}
		return len(p), nil
	}
	if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0 {
		copy(c.hdr[:], p)
		c.pending = true
		return len(p), nil
	}
	return c.tc.Write(p)
}

func (c *sessConn) Close() error { return c.raw.Close() }
