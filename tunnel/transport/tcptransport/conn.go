package tcptransport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/porthole-dev/porthole/tunnel/transport"
)

// Conn is a [transport.Conn] over TLS, TCP and yamux.
type Conn struct {
	tc     *tls.Conn
	sc     *sessConn
	sess   *yamux.Session
	ctl    *yamux.Stream
	opts   Options
	client bool // the dialing side

	ctlMu sync.Mutex // serializes writes of whole frames to ctl

	dgOut chan *dgBuf
	dgIn  chan []byte

	ctx    context.Context // done when the connection is closed; cause: why
	cancel context.CancelCauseFunc
	closed atomic.Bool // ctx is done (cheaper to test on every Read)
	wg     sync.WaitGroup

	closeOnce sync.Once
	dgOnce    sync.Once // starts the datagram writer on first use

	mu       sync.Mutex // guards the fields below
	streams  map[uint32]*stream
	early    map[uint32]earlyState // frames for peer streams not yet accepted
	lastPeer uint32                // highest peer stream ID accepted
	// lastLocal is the highest stream ID this side opened and registered.
	// yamux announces a stream before OpenStream returns, so the peer's frames
	// for it (an abort when it refuses the stream at once) can arrive before
	// it is registered: frames for local IDs above lastLocal wait in early.
	lastLocal uint32
	peerOpen  int // peer streams accepted and not yet finished
}

// earlyState is what control frames said about a stream before AcceptStream
// returned it.
type earlyState struct {
	fin     bool
	finSize uint64
	abort   byte
	code    uint64
}

// maxEarly bounds earlyState entries; a peer can't legitimately have more
// unaccepted streams than the backlog.
const maxEarly = 4096

var _ transport.Conn = (*Conn)(nil)

func newConn(tc *tls.Conn, sc *sessConn, sess *yamux.Session, ctl *yamux.Stream, o Options, client bool) *Conn {
	ctx, cancel := context.WithCancelCause(context.Background())
	c := &Conn{
		tc: tc, sc: sc, sess: sess, ctl: ctl, opts: o, client: client,
		dgOut:   make(chan *dgBuf, o.DatagramQueue),
		dgIn:    make(chan []byte, o.DatagramQueue),
		ctx:     ctx,
		cancel:  cancel,
		streams: make(map[uint32]*stream),
		early:   make(map[uint32]earlyState),
	}
	if client {
		c.lastLocal = ctl.StreamID()
	} else {
		c.lastPeer = ctl.StreamID() // the control stream is the peer's first
	}
	// One goroutine reads the control stream and, when the session ends, says
	// why: a close frame read there beats the TCP error.
	c.wg.Go(func() {
		err := c.readControl()
		var ce *transport.CloseError
		switch {
		case errors.As(err, &ce):
			c.finish(ce)
		case errors.Is(err, errProtocol):
			c.finish(err)
		}
		c.sess.Close()
		c.finish(c.lostErr())
		c.wakeAll()
	})
	return c
}

// finish records why the connection ended (the first reason wins).
func (c *Conn) finish(cause error) {
	c.closed.Store(true)
	c.cancel(cause)
}

// lostErr explains a session that ended without a close frame.
func (c *Conn) lostErr() error {
	err := c.sc.firstReadErr()
	if err == nil {
		return errors.New("tcptransport: connection closed")
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		return &mappedError{seam: transport.ErrPeerRestarted, orig: fmt.Errorf("tcp connection ended without a close frame: %w", err)}
	}
	return fmt.Errorf("tcptransport: connection lost: %w", err)
}

// cause is why the connection ended; call it once yamux reported a shutdown
// (the monitor goroutine records the cause right after).
func (c *Conn) cause() error {
	<-c.ctx.Done()
	return context.Cause(c.ctx)
}

// TLS is the connection's TLS state (peer certificates, ALPN).
func (c *Conn) TLS() tls.ConnectionState { return c.tc.ConnectionState() }

// OpenStream opens a stream. yamux announces it to the peer at once.
func (c *Conn) OpenStream(ctx context.Context) (transport.Stream, error) {
	if c.closed.Load() {
		return nil, fmt.Errorf("tcptransport: open stream: %w", c.cause())
	}
	type result struct {
		ys  *yamux.Stream
		err error
	}
	// yamux's OpenStream takes no context; it blocks only while AcceptBacklog
	// streams wait for the peer's accept. A caller that gives up leaves the
	// goroutine to close the stream if it ever opens.
	done := make(chan result, 1)
	go func() {
		ys, err := c.sess.OpenStream()
		done <- result{ys, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			if errors.Is(r.err, yamux.ErrSessionShutdown) {
				return nil, fmt.Errorf("tcptransport: open stream: %w", c.cause())
			}
			return nil, fmt.Errorf("tcptransport: open stream: %w", r.err)
		}
		return c.register(r.ys), nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.ys != nil {
				// The peer may already have it: abort, so its reader sees why.
				c.register(r.ys).Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// AcceptStream waits for the peer's next stream. A stream beyond
// Options.MaxIncomingStreams is aborted with CodeTooManyStreams, and it waits on.
func (c *Conn) AcceptStream(ctx context.Context) (transport.Stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()
	for {
		s, over, err := c.acceptOne(ctx)
		if err != nil {
			return nil, err
		}
		if over {
			s.Abort(CodeTooManyStreams)
			continue
		}
		return s, nil
	}
}

// acceptOne takes yamux's next stream and registers it; over says the peer
// has more open than Options.MaxIncomingStreams with it.
func (c *Conn) acceptOne(ctx context.Context) (_ *stream, over bool, _ error) {
	ys, err := c.sess.AcceptStreamWithContext(ctx)
	if err != nil {
		if c.ctx.Err() != nil || errors.Is(err, yamux.ErrSessionShutdown) {
			return nil, false, fmt.Errorf("tcptransport: accept stream: %w", c.cause())
		}
		return nil, false, err
	}
	id := ys.StreamID()
	c.mu.Lock()
	early := c.early[id]
	// Peer stream IDs arrive in order: frames for lower IDs not taken by now
	// belong to streams yamux refused.
	for eid := range c.early {
		if eid <= id && c.peerOpened(eid) {
			delete(c.early, eid)
		}
	}
	c.lastPeer = max(c.lastPeer, id)
	// Registered in the same critical section: a control frame for this
	// stream processed in between would find neither the early state (id is
	// no longer above lastPeer) nor the stream, and be dropped.
	s := c.registerLocked(ys, early)
	c.peerOpen++
	over = c.opts.MaxIncomingStreams > 0 && c.peerOpen > c.opts.MaxIncomingStreams
	c.mu.Unlock()
	s.maybeFinish()
	return s, over, nil
}

// register records a stream this side opened, with what the peer's frames
// said about it before.
func (c *Conn) register(ys *yamux.Stream) *stream {
	id := ys.StreamID()
	c.mu.Lock()
	e := c.early[id]
	delete(c.early, id)
	c.lastLocal = max(c.lastLocal, id)
	s := c.registerLocked(ys, e)
	c.mu.Unlock()
	s.maybeFinish()
	return s
}

// registerLocked makes the stream for ys with what early frames said and
// records it; c.mu must be held. The caller runs maybeFinish after unlocking.
func (c *Conn) registerLocked(ys *yamux.Stream, e earlyState) *stream {
	s := &stream{c: c, ys: ys, id: ys.StreamID()}
	s.peerFin, s.peerFinSize = e.fin, e.finSize
	if e.abort&abortReset != 0 {
		s.readAbort = &transport.StreamError{Code: e.code, Remote: true}
	}
	if e.abort&abortStopped != 0 {
		s.writeAbort = &transport.StreamError{Code: e.code, Remote: true}
	}
	c.streams[s.id] = s
	return s
}

func (c *Conn) unregister(id uint32) {
	c.mu.Lock()
	if _, ok := c.streams[id]; ok && c.peerOpened(id) {
		c.peerOpen--
	}
	delete(c.streams, id)
	c.mu.Unlock()
}

// peerOpened says whether stream id was opened by the peer.
func (c *Conn) peerOpened(id uint32) bool { return (id%2 == 1) != c.isClient() }

// lookup finds a stream for a control frame; for a peer stream not yet
// accepted, or a stream of ours that yamux announced and OpenStream has not
// registered yet, it records the frame in early (via update).
func (c *Conn) lookup(id uint32, update func(*earlyState)) (*stream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.streams[id]; s != nil {
		return s, nil
	}
	if (c.peerOpened(id) && id > c.lastPeer) || (!c.peerOpened(id) && id > c.lastLocal) {
		if _, ok := c.early[id]; !ok && len(c.early) >= maxEarly {
			return nil, fmt.Errorf("%w: frames for too many unknown streams", errProtocol)
		}
		e := c.early[id]
		update(&e)
		c.early[id] = e
	}
	return nil, nil // a stream already finished: nothing to do
}

// isClient: the dialer's streams have odd IDs, and its control stream is 1.
func (c *Conn) isClient() bool { return c.client }

func (c *Conn) peerFIN(id uint32, size uint64) error {
	s, err := c.lookup(id, func(e *earlyState) { e.fin, e.finSize = true, size })
	if s != nil {
		s.onPeerFIN(size)
	}
	return err
}

func (c *Conn) peerAbort(id uint32, code uint64, flags byte) error {
	s, err := c.lookup(id, func(e *earlyState) { e.abort |= flags; e.code = code })
	if s != nil {
		s.onPeerAbort(code, flags)
	}
	return err
}

// wakeAll unblocks every stream's readers and writers (the connection ended).
func (c *Conn) wakeAll() {
	c.mu.Lock()
	all := make([]*stream, 0, len(c.streams))
	for _, s := range c.streams {
		all = append(all, s)
	}
	c.mu.Unlock()
	for _, s := range all {
		s.wake()
	}
}

// dgBuf is one datagram frame, pooled so sending allocates nothing.
type dgBuf struct {
	n int
	b [frameHeader + transport.MaxDatagram]byte
}

func (d *dgBuf) frame() []byte { return d.b[:d.n] }

var dgPool = sync.Pool{New: func() any { return new(dgBuf) }}

// SendDatagram queues b; when the queue is full it is dropped, as UDP would.
func (c *Conn) SendDatagram(b []byte) error {
	if len(b) > transport.MaxDatagram {
		return fmt.Errorf("tcptransport: send datagram of %d bytes: %w", len(b), transport.ErrDatagramTooLarge)
	}
	if c.closed.Load() {
		return fmt.Errorf("tcptransport: send datagram: %w", c.cause())
	}
	c.dgOnce.Do(func() { c.wg.Go(c.writeDatagrams) })
	d := dgPool.Get().(*dgBuf)
	d.n = len(appendFrameHeader(d.b[:0], frameDatagram, len(b)))
	d.n += copy(d.b[d.n:], b)
	select {
	case c.dgOut <- d:
	default:
		dgPool.Put(d)
	}
	return nil
}

// ReceiveDatagram waits for the next datagram.
func (c *Conn) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	select {
	case d := <-c.dgIn:
		return d, nil
	case <-c.ctx.Done():
		return nil, fmt.Errorf("tcptransport: receive datagram: %w", c.cause())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ExportKeyingMaterial is the TLS exporter of this connection.
func (c *Conn) ExportKeyingMaterial(label string, context []byte, length int) ([]byte, error) {
	cs := c.tc.ConnectionState()
	return cs.ExportKeyingMaterial(label, context, length)
}

func (c *Conn) LocalAddr() net.Addr  { return c.tc.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr { return c.tc.RemoteAddr() }

// CloseWithError sends a close frame with code and msg and returns once it is
// written (at most CloseLinger). The TCP connection is closed in the
// background when the peer has closed its end or CloseLinger has passed, so a
// reset can't overtake the frame. Idempotent.
func (c *Conn) CloseWithError(code uint64, msg string) error {
	c.closeOnce.Do(func() {
		c.finish(&transport.CloseError{Code: code, Msg: msg})
		c.wakeAll()
		linger := time.NewTimer(c.opts.CloseLinger)
		sent := make(chan struct{})
		c.wg.Go(func() {
			defer linger.Stop()
			err := c.writeControl(appendClose(nil, code, msg))
			close(sent)
			if err == nil {
				select {
				case <-c.sess.CloseChan(): // the peer read it and closed
				case <-linger.C:
				}
			}
			c.sess.Close()
		})
		wait := time.NewTimer(c.opts.CloseLinger)
		defer wait.Stop()
		select {
		case <-sent:
		case <-c.sess.CloseChan():
		case <-wait.C:
		}
	})
	return nil
}

// Context is done when the connection is closed.
func (c *Conn) Context() context.Context { return c.ctx }

// Transport returns "tcp".
func (c *Conn) Transport() string { return Name }

// mappedError puts the seam's error in front of the original one: errors.Is
// and errors.As find both.
type mappedError struct {
	seam error
	orig error
}

func (e *mappedError) Error() string   { return e.seam.Error() + ": " + e.orig.Error() }
func (e *mappedError) Unwrap() []error { return []error{e.seam, e.orig} }
