package bench

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"
	"golang.org/x/time/rate"
)

// rtspViewer is a gortsplib client playing the bench camera's stream over
// TCP, noting each complete frame's delay (receive time of its last packet
// minus the send time the camera stamped into it).
type rtspViewer struct {
	c     *gortsplib.Client
	epoch time.Time
	lost  atomic.Int64 // RTP packets the client saw missing

	mu     sync.Mutex               // guards the fields below
	delays map[uint32]time.Duration // frame number -> delay, complete frames only
	last   uint32                   // highest frame number completed
	// the frame being received: its number, send time, and whether a
	// packet of it went missing
	cur     uint32
	curSent time.Duration
	inFrame bool
	broken  bool
	seq     uint16 // the last packet's RTP sequence number
}

// playRTSP opens rawURL (rtsp:// or rtsps://, with the login in it) with
// the TCP transport, dialing dial (nil: the URL's host), verifying the
// server with tc (for rtsps), and plays it.
func playRTSP(rawURL string, epoch time.Time, tc *tls.Config, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*rtspViewer, error) {
	u, err := base.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	tcp := gortsplib.TransportTCP
	v := &rtspViewer{epoch: epoch, delays: map[uint32]time.Duration{}}
	c := &gortsplib.Client{Transport: &tcp, ReadTimeout: 10 * time.Second, DialContext: dial,
		OnTransportSwitch: func(error) {}, OnDecodeError: func(error) {},
		OnPacketsLost: func(n uint64) {
			v.lost.Add(int64(n))
			v.mu.Lock()
			v.broken = true
			v.mu.Unlock()
		}}
	if tc != nil {
		c.TLSConfig = tc.Clone() // the client sets its ServerName
	}
	v.c = c
	if err := c.Start(u.Scheme, u.Host); err != nil {
		return nil, fmt.Errorf("bench: rtsp: %w", err)
	}
	desc, _, err := c.Describe(u)
	if err == nil {
		err = c.SetupAll(desc.BaseURL, desc.Medias)
	}
	if err == nil {
		c.OnPacketRTPAny(func(_ *description.Media, _ format.Format, p *rtp.Packet) { v.packet(p) })
		_, err = c.Play(nil)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("bench: rtsp %s: %w", u.Path, err)
	}
	return v, nil
}

// packet takes one RTP packet of the H.264 track.
func (v *rtspViewer) packet(p *rtp.Packet) {
	now := time.Since(v.epoch)
	pl := p.Payload
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.inFrame && p.SequenceNumber != v.seq+1 {
		v.broken = true // a packet of the frame is missing
	}
	v.seq = p.SequenceNumber
	var slice []byte
	switch {
	case len(pl) > 1+stampLen && pl[0]&0x1f == 28 && pl[1]&0x80 != 0: // FU-A start
		if t := pl[1] & 0x1f; t == 1 || t == 5 {
			slice = pl[1:]
		}
	case len(pl) > stampLen && (pl[0]&0x1f == 1 || pl[0]&0x1f == 5):
		slice = pl
	}
	if slice != nil {
		v.cur = binary.BigEndian.Uint32(slice[1:])
		v.curSent = time.Duration(binary.BigEndian.Uint64(slice[5:]))
		v.inFrame, v.broken = true, false
	}
	if p.Marker && v.inFrame {
		if !v.broken {
			v.delays[v.cur] = now - v.curSent
			v.last = max(v.last, v.cur)
		}
		v.inFrame = false
	}
}

// window returns the delays of the frames numbered lo to hi-1 that arrived
// complete, and of those that are keyframes (every gop-th).
func (v *rtspViewer) window(lo, hi, gop uint32) (all, key []time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for n := lo; n < hi; n++ {
		if d, ok := v.delays[n]; ok {
			all = append(all, d)
			if n%gop == 0 {
				key = append(key, d)
			}
		}
	}
	return all, key
}

// reached reports whether frame n or a later one arrived.
func (v *rtspViewer) reached(n uint32) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.delays) > 0 && v.last >= n
}

func (v *rtspViewer) close() { v.c.Close() }

// throttledConn reads from a net.Conn at most at a rate (bytes a second),
// as a phone on a slow link does; with a small socket buffer, the sender
// feels it at once.
type throttledConn struct {
	net.Conn
	lim *rate.Limiter
}

func (c *throttledConn) Read(b []byte) (int, error) {
	b = b[:min(len(b), c.lim.Burst())]
	if err := c.lim.WaitN(context.Background(), len(b)); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

// throttledDial dials addr (ignoring the address asked for) and reads from
// it at bitrate bit/s.
func throttledDial(addr string, bitrate int) func(ctx context.Context, network, _ string) (net.Conn, error) {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c.(*net.TCPConn).SetReadBuffer(16 << 10)
		perSec := bitrate / 8
		return &throttledConn{Conn: c, lim: rate.NewLimiter(rate.Limit(perSec), 4<<10)}, nil
	}
}

// fixedDial dials addr whatever the URL's host ("localhost", the name the
// agent's certificate has, while the relay listens on 127.0.0.1).
func fixedDial(addr string) func(ctx context.Context, network, _ string) (net.Conn, error) {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}
