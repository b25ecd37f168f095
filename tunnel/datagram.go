package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel/transport"
)

// DefaultDatagramBudget is what one session may receive of datagrams before the
// excess is dropped: 100,000 a second (about 1 Gbit/s of 1280-byte WireGuard
// packets; at 20,000 the relay path stopped at 210 Mbit/s) with bursts of
// 2,000. Over it datagrams are dropped and counted, not the session closed: a
// UDP flood from the internet is normal and must not cost the agent its
// tunnel, only its CPU must be bounded.
var DefaultDatagramBudget = Budget{Every: 10 * time.Microsecond, Burst: 2000}

// MaxDatagramPayload is the largest payload SendDatagram takes: the transports'
// MaxDatagram less the datagram header.
const MaxDatagramPayload = transport.MaxDatagram - proto.DatagramHeaderLen

// DatagramStats counts one session's (server) or all sessions' (client) datagrams.
type DatagramStats struct {
	Received  uint64 // handed to OnDatagram
	Sent      uint64 // given to the transport (which may still drop them, as UDP would)
	Dropped   uint64 // received over the budget, not parsed
	Malformed uint64 // received but not a datagram this version understands
	// QueueDropped were dropped by the transport before they were read:
	// the reader fell behind (transport.DatagramDropCounter). On the
	// client, the current session's.
	QueueDropped uint64
}

// dgramCounters are the atomic counters behind DatagramStats.
type dgramCounters struct {
	received, sent, dropped, malformed atomic.Uint64
}

func (d *dgramCounters) stats() DatagramStats {
	return DatagramStats{Received: d.received.Load(), Sent: d.sent.Load(), Dropped: d.dropped.Load(), Malformed: d.malformed.Load()}
}

func fillDatagramBudget(b Budget) Budget {
	if b.Every == 0 {
		b.Every = DefaultDatagramBudget.Every
	}
	if b.Burst == 0 {
		b.Burst = DefaultDatagramBudget.Burst
	}
	return b
}

// dgBufs holds send buffers: the transports copy what they send (quic-go copies,
// tcptransport queues its own copy), so one buffer serves one send call.
var dgBufs = sync.Pool{New: func() any { b := make([]byte, 0, transport.MaxDatagram); return &b }}

// sendDatagram frames h and payload and hands them to conn without blocking.
func sendDatagram(conn transport.Conn, ctr *dgramCounters, h proto.DatagramHeader, payload []byte) error {
	if len(payload) > MaxDatagramPayload {
		return fmt.Errorf("tunnel: send datagram: payload of %d bytes (at most %d): %w", len(payload), MaxDatagramPayload, transport.ErrDatagramTooLarge)
	}
	bp := dgBufs.Get().(*[]byte)
	defer dgBufs.Put(bp)
	b, err := proto.AppendDatagram((*bp)[:0], h, payload)
	if err != nil {
		return fmt.Errorf("tunnel: send datagram: %w", err)
	}
	*bp = b[:0]
	if err := conn.SendDatagram(b); err != nil {
		return fmt.Errorf("tunnel: send datagram: %w", connErrIfClosed(conn, err))
	}
	ctr.sent.Add(1)
	return nil
}

// Datagram is one datagram of a batch (SendDatagrams).
type Datagram struct {
	Header  proto.DatagramHeader
	Payload []byte
}

// dgBatches holds the framed copies of a batch.
var dgBatches = sync.Pool{New: func() any { return new(dgBatch) }}

type dgBatch struct {
	store  []byte   // MaxDatagram bytes per datagram
	frames [][]byte // the framed datagrams, in store
}

// sendDatagrams frames ds and hands them to conn in one call where it takes
// batches (transport.BatchDatagrams), and returns how many were sent before the
// first error. A payload above MaxDatagramPayload stops the batch there with an
// error wrapping transport.ErrDatagramTooLarge.
func sendDatagrams(conn transport.Conn, ctr *dgramCounters, ds []Datagram) (int, error) {
	bc, ok := conn.(transport.BatchDatagrams)
	if !ok || len(ds) == 1 {
		for i, d := range ds {
			if err := sendDatagram(conn, ctr, d.Header, d.Payload); err != nil {
				return i, err
			}
		}
		return len(ds), nil
	}
	b := dgBatches.Get().(*dgBatch)
	defer dgBatches.Put(b)
	need := len(ds) * transport.MaxDatagram
	if cap(b.store) < need {
		b.store = make([]byte, 0, need)
	}
	b.frames = b.frames[:0]
	var err error
	for i, d := range ds {
		if len(d.Payload) > MaxDatagramPayload {
			err = fmt.Errorf("tunnel: send datagram: payload of %d bytes (at most %d): %w", len(d.Payload), MaxDatagramPayload, transport.ErrDatagramTooLarge)
			break
		}
		off := i * transport.MaxDatagram
		f, ferr := proto.AppendDatagram(b.store[off:off:off+transport.MaxDatagram], d.Header, d.Payload)
		if ferr != nil {
			err = fmt.Errorf("tunnel: send datagram: %w", ferr)
			break
		}
		b.frames = append(b.frames, f)
	}
	n, serr := bc.SendDatagrams(b.frames)
	ctr.sent.Add(uint64(n))
	clear(b.frames)
	if serr != nil {
		return n, fmt.Errorf("tunnel: send datagram: %w", connErrIfClosed(conn, serr))
	}
	return n, err
}

// connErrIfClosed is connErr, except that a datagram too large stays itself
// (it is not the connection's fault).
func connErrIfClosed(conn transport.Conn, err error) error {
	if errors.Is(err, transport.ErrDatagramTooLarge) {
		return err
	}
	return connErr(conn, err)
}

// datagramBurst is how many waiting datagrams datagramLoop takes before it
// calls flush.
const datagramBurst = 64

// datagramLoop reads conn's datagrams until ctx ends or conn closes, handing
// each well-formed one within budget to handle. The payload passed to handle is
// valid only during the call. Datagrams over budget are dropped before parsing;
// malformed ones are counted and logged at most once a minute. When the
// transport can say whether more are waiting (transport.DatagramPoller), a
// burst is handled before flush (if not nil) is called; otherwise flush follows
// every datagram.
func datagramLoop(ctx context.Context, conn transport.Conn, budget Budget, ctr *dgramCounters, log *slog.Logger, handle func(proto.DatagramHeader, []byte), flush func()) {
	lim := budget.limiter()
	var bad *logLimiter // made on the first malformed datagram: most sessions see none
	one := func(b []byte) {
		if !lim.Allow() {
			ctr.dropped.Add(1)
			return
		}
		h, payload, err := proto.ParseDatagram(b)
		if err != nil {
			ctr.malformed.Add(1)
			if bad == nil {
				bad = newLogLimiter(1, time.Minute)
			}
			if ok, n := bad.allow(); ok {
				log.Warn("malformed datagrams from the peer dropped", "err", err, "len", len(b), "dropped_since_last_log", n, "malformed_total", ctr.malformed.Load())
			}
			return
		}
		ctr.received.Add(1)
		handle(h, payload)
	}
	poll, _ := conn.(transport.DatagramPoller)
	for {
		b, err := conn.ReceiveDatagram(ctx)
		if err != nil {
			return
		}
		one(b)
		for n := 1; poll != nil && n < datagramBurst; n++ {
			b, ok := poll.TryReceiveDatagram()
			if !ok {
				break
			}
			one(b)
		}
		if flush != nil {
			flush()
		}
	}
}

// SendDatagram sends one datagram to the relay over the current session. It never
// blocks: when the transport's queue is full the datagram is dropped, as UDP
// would. It returns ErrNotConnected without a session, and an error wrapping
// transport.ErrDatagramTooLarge for a payload above MaxDatagramPayload.
func (c *Client) SendDatagram(h proto.DatagramHeader, payload []byte) error {
	if len(payload) > MaxDatagramPayload {
		return fmt.Errorf("tunnel: send datagram: payload of %d bytes (at most %d): %w", len(payload), MaxDatagramPayload, transport.ErrDatagramTooLarge)
	}
	c.mu.Lock()
	cn := c.cur
	c.mu.Unlock()
	if cn == nil {
		return ErrNotConnected
	}
	return sendDatagram(cn.conn, &c.dgrams, h, payload)
}

// SendDatagrams sends ds in order, as SendDatagram each but with as few system
// calls as the transport allows, and returns how many were sent before the
// first error.
func (c *Client) SendDatagrams(ds []Datagram) (int, error) {
	c.mu.Lock()
	cn := c.cur
	c.mu.Unlock()
	if cn == nil {
		return 0, ErrNotConnected
	}
	return sendDatagrams(cn.conn, &c.dgrams, ds)
}

// DatagramStats counts the datagrams of all sessions since New.
func (c *Client) DatagramStats() DatagramStats {
	st := c.dgrams.stats()
	c.mu.Lock()
	cn := c.cur
	c.mu.Unlock()
	if cn != nil {
		st.QueueDropped = queueDropped(cn.conn)
	}
	return st
}

func queueDropped(conn transport.Conn) uint64 {
	if d, ok := conn.(transport.DatagramDropCounter); ok {
		return d.DatagramsDropped()
	}
	return 0
}

// receiveDatagrams runs Config.OnDatagram for the session's datagrams until ctx ends.
func (c *Client) receiveDatagrams(ctx context.Context, cn *clientConn) {
	datagramLoop(ctx, cn.conn, c.cfg.DatagramBudget, &c.dgrams, c.log, c.cfg.OnDatagram, nil)
}

// SendDatagram sends one datagram to the agent. It never blocks: when the
// transport's queue is full the datagram is dropped, as UDP would. A payload
// above MaxDatagramPayload returns an error wrapping
// transport.ErrDatagramTooLarge; a closed session, the reason it closed.
func (ss *ServerSession) SendDatagram(h proto.DatagramHeader, payload []byte) error {
	return sendDatagram(ss.conn, &ss.dgrams, h, payload)
}

// SendDatagrams sends ds to the agent in order, as SendDatagram each but with
// as few system calls as the transport allows, and returns how many were sent
// before the first error.
func (ss *ServerSession) SendDatagrams(ds []Datagram) (int, error) {
	return sendDatagrams(ss.conn, &ss.dgrams, ds)
}

// DatagramStats counts the session's datagrams.
func (ss *ServerSession) DatagramStats() DatagramStats {
	st := ss.dgrams.stats()
	st.QueueDropped = queueDropped(ss.conn)
	return st
}

// startDatagrams starts the session's datagram reader when ServerConfig.OnDatagram
// is set (none otherwise: idle agents must stay cheap) and returns a function
// that waits for it; the reader ends when the connection closes.
func (ss *ServerSession) startDatagrams() (wait func()) {
	h := ss.srv.cfg.OnDatagram
	if h == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ss.receiveDatagrams(h)
	}()
	return func() { <-done }
}

func (ss *ServerSession) receiveDatagrams(h func(*ServerSession, proto.DatagramHeader, []byte)) {
	var flush func()
	if f := ss.srv.cfg.OnDatagramsFlush; f != nil {
		flush = func() { f(ss) }
	}
	datagramLoop(ss.conn.Context(), ss.conn, ss.srv.cfg.DatagramBudget, &ss.dgrams, ss.log, func(dh proto.DatagramHeader, p []byte) { h(ss, dh, p) }, flush)
}
