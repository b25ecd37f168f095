package gateway

import (
	"sync/atomic"

	"github.com/quic-go/quic-go"
)

// StreamErrorCode values sent when a stream is aborted.
const (
	// StreamAborted: the other side of the splice failed or the gateway shut down.
	StreamAborted quic.StreamErrorCode = 1
	// StreamRefused: the service is unknown, not authorized, or its target is unreachable.
	StreamRefused quic.StreamErrorCode = 2
)

// QUICStream adapts a QUIC stream to Conn. CloseWrite sends FIN; Close aborts
// whatever is still open, but never discards data already sent with a FIN.
func QUICStream(s *quic.Stream) Conn { return &quicConn{s: s} }

type quicConn struct {
	s         *quic.Stream
	finSent   atomic.Bool
	closeOnce atomic.Bool
}

func (c *quicConn) Read(b []byte) (int, error)  { return c.s.Read(b) }
func (c *quicConn) Write(b []byte) (int, error) { return c.s.Write(b) }

func (c *quicConn) CloseWrite() error {
	c.finSent.Store(true)
	return c.s.Close()
}

func (c *quicConn) Close() error {
	if c.closeOnce.Swap(true) {
		return nil
	}
	c.s.CancelRead(StreamAborted)
	if !c.finSent.Load() {
		c.s.CancelWrite(StreamAborted)
	}
	return nil
}
