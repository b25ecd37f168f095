// Package quictransport is the QUIC implementation of the tunnel's transport
// seam ([transport.Conn], [transport.Stream], [transport.Listener]) on quic-go.
//
// The agent calls [Dial]; the relay calls [Listen] once on its UDP socket. Both
// take a *tls.Config whose NextProtos the caller sets (proto.ALPN), and a
// *quic.Config ([DefaultClientConfig], [DefaultServerConfig] when nil).
//
// quic-go prints its own warning when it can't get the UDP socket buffers it
// wants; this package silences that (it sets QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING
// unless already set) and says it in plain words instead: see [CheckBuffers] and
// [TakeBufferWarning].
package quictransport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/porthole-dev/porthole/tunnel/transport"
)

// Name is what Conn.Transport returns.
const Name = "quic"

// InitialPacketSize is the QUIC packet size both default configs start from
// and never go below: the smallest that carries a transport.MaxDatagram
// payload (a phone's WireGuard packet) from the first packet on. Left to path
// MTU discovery (from 1280), full-size datagrams were refused until discovery
// succeeded, and for the rest of the connection when a probe was lost to a
// busy CPU. A path that can't carry 1390-byte UDP payloads fails the QUIC
// handshake instead, and the agent falls back to TCP, which carries datagrams
// as frames.
const InitialPacketSize = 1390

// DefaultClientConfig is the agent's QUIC configuration. The handshake timeout
// is short because the agent falls back to TCP when QUIC hasn't connected within
// about 2 s; keep-alives keep NAT bindings warm between the tunnel's heartbeats.
// Windows: 512 KiB initial per stream growing to 16 MiB (one video stream at
// full speed over a 50 ms path), 64 MiB per connection.
//
// Measured for issue 7 (relay and agent on loopback, 2 cores): quic-go sends
// with GSO (14 packets per sendmsg) and path MTU discovery settles at 1436-byte
// packets; 4 MiB initial stream and 8 MiB connection windows, or starting at
// 1452 bytes, changed CPU per GB by less than the run-to-run noise. What costs
// is per packet inside quic-go (AES-GCM, packing, one recvmmsg slot each) and
// waking threads between its goroutines: see BenchmarkForward with -cpu 1,2.
func DefaultClientConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           2 * time.Second,
		MaxIdleTimeout:                 30 * time.Second,
		KeepAlivePeriod:                15 * time.Second,
		MaxIncomingStreams:             4096, // one per viewer connection, opened by the relay
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     512 << 10,
		MaxStreamReceiveWindow:         16 << 20,
		InitialConnectionReceiveWindow: 1 << 20,
		MaxConnectionReceiveWindow:     64 << 20,
		EnableDatagrams:                true,
		InitialPacketSize:              InitialPacketSize,
	}
}

// DefaultServerConfig is the relay's QUIC configuration: agents open only the
// control stream, so the relay accepts few streams per connection.
func DefaultServerConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           5 * time.Second,
		MaxIdleTimeout:                 30 * time.Second,
		MaxIncomingStreams:             4,
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     512 << 10,
		MaxStreamReceiveWindow:         16 << 20,
		InitialConnectionReceiveWindow: 1 << 20,
		MaxConnectionReceiveWindow:     64 << 20,
		EnableDatagrams:                true,
		InitialPacketSize:              InitialPacketSize,
	}
}

// withDatagrams returns a copy of c (or def when c is nil) with datagrams on,
// since the seam promises them.
func withDatagrams(c *quic.Config, def func() *quic.Config) *quic.Config {
	if c == nil {
		c = def()
	} else {
		c = c.Clone()
	}
	c.EnableDatagrams = true
	return c
}

// Dial connects to a relay at raddr. With pc nil Dial opens a UDP socket of its
// own and closes it with the connection. A pc the caller gives stays the
// caller's (it is not closed); connections dialed from the same pc share one
// quic.Transport (one reader on the socket), which ends with the last of them. qconf nil means
// [DefaultClientConfig]. The handshake is bounded by ctx and
// qconf.HandshakeIdleTimeout.
func Dial(ctx context.Context, pc net.PacketConn, raddr *net.UDPAddr, tlsConf *tls.Config, qconf *quic.Config) (transport.Conn, error) {
	if tlsConf == nil || raddr == nil {
		return nil, errors.New("quictransport: dial: tls.Config and address are required")
	}
	silenceQUICGoWarning()
	owned := pc == nil
	if owned {
		network := "udp4"
		laddr := &net.UDPAddr{IP: net.IPv4zero}
		if raddr.IP.To4() == nil {
			network, laddr = "udp6", &net.UDPAddr{IP: net.IPv6unspecified}
		}
		c, err := ListenUDP(network, laddr.String())
		if err != nil {
			return nil, fmt.Errorf("quictransport: dial: %w", err)
		}
		pc = c
	}
	noteBuffers(pc)
	var tr *quic.Transport
	var release func()
	if owned {
		tr = &quic.Transport{Conn: withGRO(pc)}
		release = func() {
			closeTransport(tr)
			pc.Close()
			forget(pc)
		}
	} else {
		tr = acquireShared(pc)
		release = func() { releaseShared(pc) }
	}
	qc, err := tr.Dial(ctx, raddr, tlsConf, withDatagrams(qconf, DefaultClientConfig))
	if err != nil {
		release()
		return nil, fmt.Errorf("quictransport: dial %s: %w", raddr, mapErr(err))
	}
	c := newConn(qc, tr)
	// The transport's reader goroutine lives as long as the connection.
	context.AfterFunc(qc.Context(), release)
	return c, nil
}

// ListenConfig configures [Listen].
type ListenConfig struct {
	// PacketConn is the relay's UDP socket; it stays the caller's (Close does not
	// close it), but the listener must be its only reader: don't Dial from it.
	// Nil: Listen binds Addr and closes that socket on Close.
	PacketConn net.PacketConn
	// Addr is the UDP address to bind when PacketConn is nil.
	Addr string
	// TLSConfig is required; its NextProtos should hold proto.ALPN.
	TLSConfig *tls.Config
	// QUICConfig nil means [DefaultServerConfig]. Datagrams are always enabled.
	QUICConfig *quic.Config
	// StatelessResetKey lets a restarted relay tell agents at once that their
	// connection is gone (they see transport.ErrPeerRestarted). Nil: a random key
	// per Listen, so resets work only within one process lifetime. quic-go
	// answers with a reset only packets over 42 bytes (a smaller one could be a
	// reset itself): a heartbeat carrying 16 bytes or more of stream data gets one.
	StatelessResetKey *quic.StatelessResetKey
	// RequireRetry, when it returns true, makes the relay answer new handshakes
	// with a QUIC Retry (source-address validation: a spoofed source can't make
	// the relay keep state). Nil: only RetryAbove decides.
	RequireRetry func() bool
	// RetryAbove demands Retry while more than this many handshakes are pending
	// (started but not yet returned by Accept). 0: never for this reason.
	RetryAbove int
	// MaxPending refuses new handshakes (CONNECTION_REFUSED) while this many are
	// pending. 0 means 1024; negative means no cap.
	MaxPending int
}

// Listener accepts agents' QUIC connections.
type Listener struct {
	tr      *quic.Transport
	ln      *quic.Listener
	ownedPC net.PacketConn // closed by Close when Listen bound it
	pending atomic.Int64   // handshakes started and not yet accepted or dead

	closeOnce sync.Once
	closeErr  error
}

var _ transport.Listener = (*Listener)(nil)

// pendingKey marks a connection's context with its pending-count release.
type pendingKey struct{}

// Listen starts accepting QUIC connections on cfg.PacketConn (or cfg.Addr).
func Listen(cfg ListenConfig) (transport.Listener, error) {
	if cfg.TLSConfig == nil {
		return nil, errors.New("quictransport: listen: TLSConfig is required")
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = 1024
	}
	silenceQUICGoWarning()
	l := &Listener{}
	pc := cfg.PacketConn
	if pc == nil {
		c, err := ListenUDP("udp", cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("quictransport: listen: %w", err)
		}
		pc, l.ownedPC = c, c
	}
	noteBuffers(pc)
	l.tr = &quic.Transport{
		Conn:              withGRO(pc),
		StatelessResetKey: cfg.StatelessResetKey,
		VerifySourceAddress: func(net.Addr) bool {
			if cfg.RetryAbove > 0 && l.pending.Load() > int64(cfg.RetryAbove) {
				return true
			}
			return cfg.RequireRetry != nil && cfg.RequireRetry()
		},
		ConnContext: func(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
			if cfg.MaxPending > 0 && l.pending.Load() >= int64(cfg.MaxPending) {
				return nil, errors.New("too many pending handshakes")
			}
			l.pending.Add(1)
			var once sync.Once
			release := func() { once.Do(func() { l.pending.Add(-1) }) }
			// The context ends with the connection: a handshake that dies is no
			// longer pending.
			context.AfterFunc(ctx, release)
			return context.WithValue(ctx, pendingKey{}, release), nil
		},
	}
	ln, err := l.tr.Listen(cfg.TLSConfig, withDatagrams(cfg.QUICConfig, DefaultServerConfig))
	if err != nil {
		l.tr.Close()
		if l.ownedPC != nil {
			l.ownedPC.Close()
		}
		return nil, fmt.Errorf("quictransport: listen: %w", err)
	}
	l.ln = ln
	// The bare-datagram reader (and its steered socket) belong to the
	// listener, not to the first agent that enables them.
	muxFor(l.tr)
	return l, nil
}

// Accept waits for the next connection whose handshake completed.
func (l *Listener) Accept(ctx context.Context) (transport.Conn, error) {
	qc, err := l.ln.Accept(ctx)
	if err != nil {
		if errors.Is(err, quic.ErrServerClosed) {
			return nil, fmt.Errorf("quictransport: accept: %w", net.ErrClosed)
		}
		return nil, fmt.Errorf("quictransport: accept: %w", err)
	}
	if release, ok := qc.Context().Value(pendingKey{}).(func()); ok {
		release()
	}
	return newConn(qc, l.tr), nil
}

// Pending is the number of handshakes started and not yet accepted.
func (l *Listener) Pending() int { return int(l.pending.Load()) }

// Addr is the UDP address the listener is bound to.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Close stops accepting and closes every connection of this listener.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.ln.Close()
		l.closeErr = closeTransport(l.tr)
		if l.ownedPC != nil {
			if err := l.ownedPC.Close(); err != nil && l.closeErr == nil {
				l.closeErr = err
			}
		}
	})
	return l.closeErr
}

var (
	sharedMu sync.Mutex // guards shared
	shared   = map[net.PacketConn]*sharedTransport{}
)

// sharedTransport is the one quic.Transport reading a caller's socket.
type sharedTransport struct {
	tr      *quic.Transport
	refs    int
	closing chan struct{} // non-nil while the last user's Close runs
}

func acquireShared(pc net.PacketConn) *quic.Transport {
	for {
		sharedMu.Lock()
		st := shared[pc]
		if st != nil && st.closing != nil {
			// Two readers on one socket would split its packets: wait.
			closing := st.closing
			sharedMu.Unlock()
			<-closing
			continue
		}
		if st == nil {
			st = &sharedTransport{tr: &quic.Transport{Conn: withGRO(pc)}}
			shared[pc] = st
		}
		st.refs++
		sharedMu.Unlock()
		return st.tr
	}
}

func releaseShared(pc net.PacketConn) {
	sharedMu.Lock()
	st := shared[pc]
	st.refs--
	if st.refs > 0 {
		sharedMu.Unlock()
		return
	}
	st.closing = make(chan struct{})
	sharedMu.Unlock()
	closeTransport(st.tr)
	sharedMu.Lock()
	delete(shared, pc)
	close(st.closing)
	sharedMu.Unlock()
}
