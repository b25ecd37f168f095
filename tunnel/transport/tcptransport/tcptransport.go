// Package tcptransport is the tunnel's fallback transport for networks that
// block UDP: TLS 1.3 over one TCP connection, with streams multiplexed by
// hashicorp/yamux, behind the same seam as QUIC ([transport.Conn]).
//
// Why yamux: it is well kept and proven under load (Consul, Nomad, Vault, frp's
// default transport), small, has per-stream flow-control windows and half-close
// by FIN. What yamux lacks the seam needs, this package adds on a control stream
// (the dialer's first stream, ID 1), in length-prefixed frames:
//
//   - datagrams (bounded queues both ways that drop when full, as UDP would);
//   - a close frame with the application's code and reason, sent before the TCP
//     connection is closed, so the peer sees a *transport.CloseError;
//   - per-stream FIN (with the final size) and abort frames carrying a code in
//     either direction (reset: the peer's reads fail; stop-sending: its writes
//     fail). yamux's own FIN is sent only once a stream is finished both ways,
//     so yamux's StreamCloseTimeout bounds the state a misbehaving peer can pin
//     without ever cutting a legitimately half-closed stream.
//
// Without a close frame, a connection that ends in a TCP reset or a plain EOF
// is reported as transport.ErrPeerRestarted (the peer's process went away:
// redial at once); the original error stays in the chain.
//
// Keep-alives: yamux's pings are off. The tunnel sends its own heartbeat every
// second and closes a silent connection; TCP's own keep-alive (Go's default)
// stays on for half-open sockets.
package tcptransport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/porthole-dev/porthole/tunnel/transport"
)

// Name is what Conn.Transport returns.
const Name = "tcp"

// Options tune both ends. The zero value is the default for every field.
type Options struct {
	// HandshakeTimeout bounds the TLS handshake plus the control stream's
	// arrival. 0 means 3 s.
	HandshakeTimeout time.Duration
	// MaxStreamWindow is yamux's per-stream receive window. 0 means 16 MiB:
	// full speed for one video stream over a 50 ms path.
	MaxStreamWindow uint32
	// AcceptBacklog is how many streams the peer may open before this side
	// accepts them (yamux resets the rest); each may hold 256 KiB the peer
	// sent before the accept. yamux also uses it to cap this side's opens
	// awaiting the peer's accept. 0 means 256 for Dial (the relay opens a
	// stream per viewer connection) and 16 for Listen (agents open only the
	// control stream: at most 4 MiB buffered for streams the relay never takes).
	AcceptBacklog int
	// MaxIncomingStreams caps the streams the peer may keep open at once:
	// opened by the peer, accepted here and not yet finished both ways (each
	// holds a goroutine and buffers on this side). AcceptStream aborts a stream
	// beyond it with [CodeTooManyStreams] instead of returning it. QUIC makes
	// the opener wait for stream credit instead; yamux has no such credit, so
	// the opener here sees its stream reset. 0 means 4096 for Dial (the relay
	// opens one per viewer connection, as quictransport.DefaultClientConfig)
	// and 4 for Listen (agents open only the control stream, as
	// quictransport.DefaultServerConfig); negative means no cap.
	MaxIncomingStreams int
	// DatagramQueue is the length of the datagram send and receive queues. 0
	// means 256.
	DatagramQueue int
	// CloseLinger is how long CloseWithError waits for the peer to close after
	// sending the close frame, so a TCP reset can't overtake it. 0 means 1 s.
	CloseLinger time.Duration
	// ReadBuffer, when positive, buffers reads from the TCP socket so one
	// syscall takes in several TLS records: 64 KiB measured about 10% less CPU
	// per byte in BenchmarkThroughput, but costs its size on every idle
	// connection (an idle relay side is about 50 KiB without it). 0: none.
	ReadBuffer int
	// DialContext dials TCP for Dial. Nil means a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.HandshakeTimeout == 0 {
		r.HandshakeTimeout = 3 * time.Second
	}
	if r.MaxStreamWindow == 0 {
		r.MaxStreamWindow = 16 << 20
	}
	if r.DatagramQueue == 0 {
		r.DatagramQueue = 256
	}
	if r.CloseLinger == 0 {
		r.CloseLinger = time.Second
	}
	if r.DialContext == nil {
		var d net.Dialer
		r.DialContext = d.DialContext
	}
	return r
}

// CodeTooManyStreams is the stream error code of a stream the peer opened
// beyond Options.MaxIncomingStreams.
const CodeTooManyStreams uint64 = 0x5354 // "ST"

// streamCloseTimeout bounds how long a stream finished on this side waits for
// the peer's yamux FIN before yamux resets it; a well-behaved peer sends it as
// soon as it has processed our FIN or abort frame.
const streamCloseTimeout = 10 * time.Second

func (o *Options) yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = o.AcceptBacklog
	c.EnableKeepAlive = false
	c.KeepAliveInterval = time.Hour // must be non-zero even when off
	c.MaxStreamWindowSize = o.MaxStreamWindow
	c.StreamOpenTimeout = 0 // no goroutine per open; the tunnel's heartbeat finds dead peers
	c.StreamCloseTimeout = streamCloseTimeout
	c.LogOutput = io.Discard
	return c
}

// Dial connects to a relay's TCP address. tlsConf is required (NextProtos set by
// the caller, proto.ALPN). The handshake is bounded by ctx and
// opts.HandshakeTimeout. opts nil means defaults.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config, opts *Options) (transport.Conn, error) {
	if tlsConf == nil {
		return nil, errors.New("tcptransport: dial: tls.Config is required")
	}
	o := opts.withDefaults()
	if o.AcceptBacklog == 0 {
		o.AcceptBacklog = 256
	}
	if o.MaxIncomingStreams == 0 {
		o.MaxIncomingStreams = 4096
	}
	ctx, cancel := context.WithTimeout(ctx, o.HandshakeTimeout)
	defer cancel()
	nc, err := o.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tcptransport: dial %s: %w", addr, err)
	}
	rc := newRawConn(nc, o.ReadBuffer)
	tc := tls.Client(rc, tls13(tlsConf))
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("tcptransport: dial %s: tls: %w", addr, err)
	}
	if len(tlsConf.NextProtos) > 0 && tc.ConnectionState().NegotiatedProtocol == "" {
		// QUIC refuses a server without ALPN; so does the fallback.
		nc.Close()
		return nil, fmt.Errorf("tcptransport: dial %s: the server did not agree on an application protocol %q", addr, tlsConf.NextProtos)
	}
	sc := newSessConn(tc, rc)
	sess, err := yamux.Client(sc, o.yamuxConfig())
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("tcptransport: dial %s: %w", addr, err)
	}
	ctl, err := sess.OpenStream() // ID 1: the server takes its first stream as control
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("tcptransport: dial %s: control stream: %w", addr, err)
	}
	return newConn(tc, sc, sess, ctl, o, true), nil
}

// tls13 is conf, raised to TLS 1.3 at least: the seam promises it (QUIC
// has nothing older).
func tls13(conf *tls.Config) *tls.Config {
	if conf.MinVersion >= tls.VersionTLS13 {
		return conf
	}
	conf = conf.Clone()
	conf.MinVersion = tls.VersionTLS13
	return conf
}

// ListenConfig configures [Listen].
type ListenConfig struct {
	// Listener is the relay's TCP listener; Listen takes it over (Close closes
	// it). Nil: Listen binds Addr.
	Listener net.Listener
	// Addr is the TCP address to bind when Listener is nil.
	Addr string
	// TLSConfig is required; its NextProtos should hold proto.ALPN.
	TLSConfig *tls.Config
	// MaxHandshakes caps concurrent handshakes (TCP accepted, TLS and control
	// stream not yet done); connections beyond it are closed at once, so a flood
	// of TCP connects can't grow memory without bound. 0 means 256.
	MaxHandshakes int
	// Options tune the connections (HandshakeTimeout: 3 s by default).
	Options Options
}

// Listener accepts agents' TCP connections. Close stops accepting and closes
// connections not yet returned by Accept; accepted ones stay open.
type Listener struct {
	ln      net.Listener
	tlsConf *tls.Config
	opts    Options
	slots   chan struct{} // one per handshake in progress
	ready   chan *Conn    // handshaken, waiting for Accept

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loop and handshakes

	closeOnce sync.Once
}

var _ transport.Listener = (*Listener)(nil)

// Listen starts accepting TLS-over-TCP tunnel connections.
func Listen(cfg ListenConfig) (transport.Listener, error) {
	if cfg.TLSConfig == nil {
		return nil, errors.New("tcptransport: listen: TLSConfig is required")
	}
	if cfg.MaxHandshakes == 0 {
		cfg.MaxHandshakes = 256
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("tcptransport: listen: %w", err)
		}
	}
	opts := cfg.Options.withDefaults()
	if opts.AcceptBacklog == 0 {
		opts.AcceptBacklog = 16
	}
	if opts.MaxIncomingStreams == 0 {
		opts.MaxIncomingStreams = 4
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{
		ln:      ln,
		tlsConf: tls13(cfg.TLSConfig),
		opts:    opts,
		slots:   make(chan struct{}, cfg.MaxHandshakes),
		ready:   make(chan *Conn, 32),
		ctx:     ctx,
		cancel:  cancel,
	}
	l.wg.Go(l.acceptLoop)
	return l, nil
}

func (l *Listener) acceptLoop() {
	var backoff time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait a little, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
			case <-l.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		select {
		case l.slots <- struct{}{}:
			l.wg.Go(func() {
				defer func() { <-l.slots }()
				l.handshake(nc)
			})
		default:
			nc.Close() // too many handshakes in progress
		}
	}
}

// handshake runs TLS and waits for the control stream, all within
// HandshakeTimeout, then queues the connection for Accept.
func (l *Listener) handshake(nc net.Conn) {
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.HandshakeTimeout)
	defer cancel()
	nc.SetDeadline(time.Now().Add(l.opts.HandshakeTimeout))
	rc := newRawConn(nc, l.opts.ReadBuffer)
	tc := tls.Server(rc, l.tlsConf)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return
	}
	sc := newSessConn(tc, rc)
	sess, err := yamux.Server(sc, l.opts.yamuxConfig())
	if err != nil {
		nc.Close()
		return
	}
	ctl, err := sess.AcceptStreamWithContext(ctx)
	if err != nil || ctl.StreamID() != 1 {
		sess.Close()
		return
	}
	nc.SetDeadline(time.Time{})
	c := newConn(tc, sc, sess, ctl, l.opts, false)
	select {
	case l.ready <- c:
	default:
		c.CloseWithError(0, "relay busy")
	}
}

// Accept waits for the next connection whose handshake completed.
func (l *Listener) Accept(ctx context.Context) (transport.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.ctx.Done():
		return nil, fmt.Errorf("tcptransport: accept: %w", net.ErrClosed)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Addr is the TCP address the listener is bound to.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Close stops accepting, ends handshakes in progress and closes connections
// not yet accepted.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.cancel()
		err = l.ln.Close()
		l.wg.Wait()
		for {
			select {
			case c := <-l.ready:
				c.CloseWithError(0, "relay closing")
			default:
				return
			}
		}
	})
	return err
}
