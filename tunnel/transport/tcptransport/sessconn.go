package tcptransport

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
)

// rawConn is the TCP connection under TLS, tuned for bulk: reads go through a
// buffer (one syscall for several TLS records) and, while batching,
// writes collect so that one yamux frame's TLS records leave in one syscall.
type rawConn struct {
	net.Conn
	r io.Reader // the buffered reader, or the conn itself

	mu       sync.Mutex // guards the fields below; held while flushing to keep record order
	batching bool
	wbuf     []byte
}

func newRawConn(nc net.Conn, readBuffer int) *rawConn {
	c := &rawConn{Conn: nc, r: nc}
	if readBuffer > 0 {
		c.r = bufio.NewReaderSize(nc, readBuffer)
	}
	return c
}

func (c *rawConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *rawConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.batching {
		c.wbuf = append(c.wbuf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *rawConn) startBatch() {
	c.mu.Lock()
	c.batching = true
	c.mu.Unlock()
}

func (c *rawConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batching = false
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.wbuf)
	if cap(c.wbuf) > 256<<10 {
		c.wbuf = nil // don't keep a rare huge buffer
	} else {
		c.wbuf = c.wbuf[:0]
	}
	return err
}

// sessConn is what yamux reads and writes: the TLS connection, with
//   - the first read error kept, to tell a peer's reset from a local close;
//   - a yamux data frame's 12-byte header and its body sent in one syscall
//     (yamux writes them separately);
//   - Close closing the TCP socket directly (tls.Conn.Close would first try
//     to send close_notify, up to 5 s on a stuck socket; the close frame on the
//     control stream already said goodbye).
type sessConn struct {
	tc  *tls.Conn
	raw *rawConn

	// Only yamux's send goroutine writes; no lock needed for these.
	hdr     [12]byte
	pending bool // hdr holds a data frame's header whose body comes next

	// Only yamux's receive goroutine reads; no lock needed for these.
	body uint32   // bytes left of the current data frame's body
	rhdr [12]byte // a frame header split across reads
	rhn  int

	mu      sync.Mutex // guards the field below
	readErr error
}

// errPing: yamux answers every ping from a new goroutine that may wait 10 s
// to send, so a flood of them from the peer would pile up goroutines. Our
// peers never ping (keep-alive is off; the tunnel has its own heartbeat).
var errPing = errors.New("tcptransport: the peer sent a yamux ping")

func newSessConn(tc *tls.Conn, raw *rawConn) *sessConn {
	return &sessConn{tc: tc, raw: raw}
}

func (c *sessConn) Read(p []byte) (int, error) {
	n, err := c.tc.Read(p)
	if err == nil {
		err = c.scan(p[:n])
	}
	if err != nil {
		c.mu.Lock()
		if c.readErr == nil {
			c.readErr = err
		}
		c.mu.Unlock()
	}
	return n, err
}

// scan follows yamux's frame boundaries in what was read, to refuse pings.
func (c *sessConn) scan(p []byte) error {
	for len(p) > 0 {
		if c.body > 0 {
			n := uint32(min(uint64(len(p)), uint64(c.body)))
			c.body -= n
			p = p[n:]
			continue
		}
		n := copy(c.rhdr[c.rhn:], p)
		c.rhn += n
		p = p[n:]
		if c.rhn < yamuxHeaderSize {
			return nil
		}
		c.rhn = 0
		switch c.rhdr[1] {
		case yamuxTypeData:
			c.body = binary.BigEndian.Uint32(c.rhdr[8:12])
		case yamuxTypePing:
			return errPing
		}
	}
	return nil
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
	yamuxTypePing   = 2
)

func (c *sessConn) Write(p []byte) (int, error) {
	if c.pending {
		c.pending = false
		c.raw.startBatch()
		_, err := c.tc.Write(c.hdr[:])
		if err == nil {
			_, err = c.tc.Write(p)
		}
		if ferr := c.raw.flush(); err == nil {
			err = ferr
		}
		if err != nil {
			return 0, err
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

func (c *sessConn) Close() error { return c.raw.Conn.Close() }
