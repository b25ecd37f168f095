package quictransport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/ipv4"

	"github.com/porthole-dev/porthole/tunnel/transport"
)

// Conn is a [transport.Conn] over one QUIC connection.
type Conn struct {
	qc  *quic.Conn
	tr  *quic.Transport // qc's: bare datagrams go through its socket
	ctx context.Context // done with qc; its cause mapped to the seam's errors

	bareOn  atomic.Bool              // EnableBareDatagrams has run
	bareIn  atomic.Pointer[bareRecv] // set once, by EnableBareDatagrams
	bareMux *bareMux                 // set by EnableBareDatagrams before bareOn

	bareKeyMu   sync.Mutex     // guards the two below
	bareKey     netip.AddrPort // the peer's address c is filed under in bareMux
	bareKeySet  bool
	bareDropped atomic.Uint64

	noGSO     atomic.Bool // a segmented write failed: SendDatagrams writes packets one by one
	batchOnce sync.Once
	batchW    *ipv4.PacketConn // SendDatagrams' writer on tr's socket; nil if it has none
}

var (
	_ transport.Conn           = (*Conn)(nil)
	_ transport.BareDatagrams  = (*Conn)(nil)
	_ transport.BatchDatagrams = (*Conn)(nil)
	_ transport.DatagramPoller = (*Conn)(nil)
)

func newConn(qc *quic.Conn, tr *quic.Transport) *Conn {
	ctx, cancel := context.WithCancelCause(context.Background())
	context.AfterFunc(qc.Context(), func() { cancel(mapErr(context.Cause(qc.Context()))) })
	return &Conn{qc: qc, tr: tr, ctx: ctx}
}

// QUIC returns the underlying connection (statistics, connection state).
func (c *Conn) QUIC() *quic.Conn { return c.qc }

// OpenStream opens a bidirectional stream, waiting for the peer's stream credit.
func (c *Conn) OpenStream(ctx context.Context) (transport.Stream, error) {
	s, err := c.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("quictransport: open stream: %w", mapErr(err))
	}
	return &stream{s: s}, nil
}

// AcceptStream waits for the peer's next stream.
func (c *Conn) AcceptStream(ctx context.Context) (transport.Stream, error) {
	s, err := c.qc.AcceptStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("quictransport: accept stream: %w", mapErr(err))
	}
	return &stream{s: s}, nil
}

// SendDatagram queues b as one QUIC DATAGRAM frame (quic-go copies b), or
// after EnableBareDatagrams writes it as one UDP packet. quic-go
// drops datagrams when its queue is full. Until path MTU discovery has run (a
// few round trips after the handshake) a path may refuse payloads above about
// 1200 bytes: the error then matches transport.ErrDatagramTooLarge.
func (c *Conn) SendDatagram(b []byte) error {
	if len(b) > transport.MaxDatagram {
		return fmt.Errorf("quictransport: send datagram of %d bytes: %w", len(b), transport.ErrDatagramTooLarge)
	}
	if c.bareOn.Load() {
		return c.sendBare(b)
	}
	if err := c.qc.SendDatagram(b); err != nil {
		return fmt.Errorf("quictransport: send datagram: %w", mapErr(err))
	}
	return nil
}

// ReceiveDatagram waits for the next datagram.
func (c *Conn) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	if c.bareOn.Load() {
		return c.receiveBare(ctx)
	}
	b, err := c.qc.ReceiveDatagram(ctx)
	if err != nil {
		return nil, fmt.Errorf("quictransport: receive datagram: %w", mapErr(err))
	}
	return b, nil
}

// ExportKeyingMaterial is the TLS exporter of this connection.
func (c *Conn) ExportKeyingMaterial(label string, context []byte, length int) ([]byte, error) {
	cs := c.qc.ConnectionState().TLS
	return cs.ExportKeyingMaterial(label, context, length)
}

func (c *Conn) LocalAddr() net.Addr  { return c.qc.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// CloseWithError closes the connection with an application error the peer sees
// as a *transport.CloseError. Idempotent.
func (c *Conn) CloseWithError(code uint64, msg string) error {
	return c.qc.CloseWithError(quic.ApplicationErrorCode(code), msg)
}

// Context is done when the connection is closed.
func (c *Conn) Context() context.Context { return c.ctx }

// Transport returns "quic".
func (c *Conn) Transport() string { return Name }

// stream adapts a QUIC stream to transport.Stream with the gateway's semantics:
// CloseWrite sends FIN; Close aborts whatever is still open but never discards
// data already sent with a FIN.
type stream struct {
	s         *quic.Stream
	finSent   atomic.Bool
	closeOnce atomic.Bool
	// wdl is the write deadline (UnixNano, 0: none): Write's fast path,
	// which never blocks, still fails once it has passed.
	wdl atomic.Int64
}

var _ transport.Stream = (*stream)(nil)

func (s *stream) Read(b []byte) (int, error) {
	n, err := s.s.Read(b)
	if err != nil {
		err = mapStreamErr(err)
	}
	return n, err
}

// Write queues b on the stream at once when QUIC flow control lets it all
// in, and otherwise waits as quic-go's Write does. quic-go's Write holds back
// all but one packet's worth until the connection's send loop has packed the
// rest, so a writer of small records (TLS records of RTP packets, about one
// packet each) waited for that loop once per record: 20 RTSP viewers of one
// camera at 4 Mbit/s made 8000 such hand-overs a second and fell seconds
// behind on a busy machine while both daemons idled. What TryWriteAll queues
// is bounded by the peer's stream and connection receive windows, as data in
// flight already was.
//
// Only small writes take that path: TryWriteAll copies b and queues it as
// one more frame, which for bulk writes (16 KiB TLS records, spliced copies)
// doubled the agent's CPU per GB and cut one QUIC stream from 1.18 to
// 0.79 Gbit/s in `make bench`; a large write waits for the send loop once
// per several packets, which costs nothing measurable.
func (s *stream) Write(b []byte) (int, error) {
	if len(b) > maxQueuedWrite {
		return s.write(b)
	}
	if d := s.wdl.Load(); d == 0 || time.Now().UnixNano() < d {
		if err := s.s.TryWriteAll(b); err == nil {
			return len(b), nil
		} else if !errors.Is(err, quic.ErrWouldBlock) {
			return 0, mapStreamErr(err)
		}
	}
	return s.write(b)
}

// maxQueuedWrite is the largest write Write queues without waiting: a few
// packets, so that a TLS record of one RTP packet (about 1.4 KB) takes the
// fast path and a 16 KiB record of a bulk transfer does not.
const maxQueuedWrite = 4 << 10

// write is quic-go's blocking Write.
func (s *stream) write(b []byte) (int, error) {
	n, err := s.s.Write(b)
	if err != nil {
		err = mapStreamErr(err)
	}
	return n, err
}

func (s *stream) CloseWrite() error {
	s.finSent.Store(true)
	return mapErr(s.s.Close())
}

func (s *stream) Close() error {
	if s.closeOnce.Swap(true) {
		return nil
	}
	code := quic.StreamErrorCode(transport.CodeStreamClosed)
	s.s.CancelRead(code)
	if !s.finSent.Load() {
		s.s.CancelWrite(code)
	}
	return nil
}

func (s *stream) Abort(code uint64) {
	s.closeOnce.Store(true)
	s.s.CancelRead(quic.StreamErrorCode(code))
	s.s.CancelWrite(quic.StreamErrorCode(code))
}

func (s *stream) SetDeadline(t time.Time) error {
	s.noteWriteDeadline(t)
	return s.s.SetDeadline(t)
}
func (s *stream) SetReadDeadline(t time.Time) error { return s.s.SetReadDeadline(t) }
func (s *stream) SetWriteDeadline(t time.Time) error {
	s.noteWriteDeadline(t)
	return s.s.SetWriteDeadline(t)
}

func (s *stream) noteWriteDeadline(t time.Time) {
	if t.IsZero() {
		s.wdl.Store(0)
	} else {
		s.wdl.Store(max(t.UnixNano(), 1))
	}
}
