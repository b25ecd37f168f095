package camsim

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmjpeg"
)

// RTSPPath is the path of the RTSP stream: rtsp://host:port/stream1.
const RTSPPath = "/stream1"

// ServeRTSP serves the picture as MJPEG over RTP (RFC 2435) at rtsp://ln-address/stream1
// until ctx ends or the camera is closed, then returns nil. Only the TCP (interleaved)
// transport is offered: it is what passes through the relay, and clients that try UDP
// first fall back to it. Frames are produced only while a session is playing. ServeRTSP
// closes ln.
func (c *Camera) ServeRTSP(ctx context.Context, ln net.Listener) error {
	h := &rtspHandler{log: c.log, wake: make(chan struct{}, 1), playing: map[*gortsplib.ServerSession]struct{}{}}
	srv := &gortsplib.Server{
		Handler:     h,
		RTSPAddress: ln.Addr().String(),
		Listen:      func(string, string) (net.Listener, error) { return ln, nil },
	}
	if err := srv.Start(); err != nil {
		_ = ln.Close()
		return fmt.Errorf("camsim: start rtsp server: %w", err)
	}
	forma := &format.MJPEG{}
	medi := &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{forma}}
	stream := &gortsplib.ServerStream{Server: srv, Desc: &description.Session{Medias: []*description.Media{medi}}}
	if err := stream.Initialize(); err != nil {
		srv.Close()
		return fmt.Errorf("camsim: rtsp stream: %w", err)
	}
	h.setStream(stream)
	c.log.Info("rtsp listening", "url", "rtsp://"+ln.Addr().String()+RTSPPath)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { c.feedRTSP(ctx, h, stream, medi, forma) })

	serverDone := make(chan error, 1)
	go func() { serverDone <- srv.Wait() }()

	var err error
	select {
	case <-ctx.Done():
	case <-c.done:
	case err = <-serverDone:
		serverDone <- err
	}
	cancel()
	wg.Wait()
	stream.Close()
	srv.Close()
	<-serverDone
	if err != nil {
		return fmt.Errorf("camsim: serve rtsp: %w", err)
	}
	return nil
}

// feedRTSP packetizes frames into the stream while at least one session is playing.
func (c *Camera) feedRTSP(ctx context.Context, h *rtspHandler, stream *gortsplib.ServerStream,
	medi *description.Media, forma *format.MJPEG,
) {
	enc, err := forma.CreateEncoder()
	if err != nil {
		c.log.Error("rtsp encoder", "err", err)
		return
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	ts0 := binary.BigEndian.Uint32(b[:]) // RFC 3550: random initial timestamp
	var t0 time.Time

	for {
		for !h.anyPlaying() {
			select {
			case <-h.wake:
			case <-ctx.Done():
				return
			}
		}
		v, err := c.subscribe()
		if err != nil {
			return
		}
		for h.anyPlaying() {
			f, err := v.next(ctx)
			if err != nil {
				v.close()
				return
			}
			c.writeRTSPFrame(stream, enc, medi, f, ts0, &t0)
		}
		v.close()
	}
}

func (c *Camera) writeRTSPFrame(stream *gortsplib.ServerStream, enc *rtpmjpeg.Encoder,
	medi *description.Media, f *frame, ts0 uint32, t0 *time.Time,
) {
	pkts, err := enc.Encode(f.jpeg)
	if err != nil {
		c.log.Error("rtp mjpeg packetize", "err", err)
		return
	}
	if t0.IsZero() {
		*t0 = f.at
	}
	ts := ts0 + uint32(f.at.Sub(*t0).Microseconds()*9/100) // 90 kHz clock
	for _, p := range pkts {
		p.Timestamp = ts
		if err := stream.WritePacketRTPWithNTP(medi, p, f.at); err != nil {
			c.log.Debug("rtp write", "err", err)
			return
		}
	}
}

// rtspHandler answers RTSP requests for RTSPPath and tracks the playing sessions.
type rtspHandler struct {
	log  *slog.Logger
	wake chan struct{} // signalled (non-blocking) when a session starts playing

	mu      sync.Mutex // guards the fields below
	stream  *gortsplib.ServerStream
	playing map[*gortsplib.ServerSession]struct{}
}

var (
	_ gortsplib.ServerHandlerOnDescribe     = (*rtspHandler)(nil)
	_ gortsplib.ServerHandlerOnSetup        = (*rtspHandler)(nil)
	_ gortsplib.ServerHandlerOnPlay         = (*rtspHandler)(nil)
	_ gortsplib.ServerHandlerOnPause        = (*rtspHandler)(nil)
	_ gortsplib.ServerHandlerOnSessionClose = (*rtspHandler)(nil)
)

func (h *rtspHandler) setStream(s *gortsplib.ServerStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stream = s
}

func (h *rtspHandler) anyPlaying() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.playing) > 0
}

// lookup returns the stream for path, or the response to send instead.
func (h *rtspHandler) lookup(path string) (*base.Response, *gortsplib.ServerStream, error) {
	if path != RTSPPath {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, errNoSuchPath
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stream == nil {
		return &base.Response{StatusCode: base.StatusServiceUnavailable}, nil, errNotReady
	}
	return &base.Response{StatusCode: base.StatusOK}, h.stream, nil
}

var (
	errNoSuchPath = errors.New("no such stream; use " + RTSPPath)
	errNotReady   = errors.New("stream not ready")
)

func (h *rtspHandler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	return h.lookup(ctx.Path)
}

func (h *rtspHandler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	return h.lookup(ctx.Path)
}

func (h *rtspHandler) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	h.mu.Lock()
	h.playing[ctx.Session] = struct{}{}
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
	h.log.Info("rtsp viewer playing", "remote", ctx.Conn.NetConn().RemoteAddr().String())
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (h *rtspHandler) OnPause(ctx *gortsplib.ServerHandlerOnPauseCtx) (*base.Response, error) {
	h.mu.Lock()
	delete(h.playing, ctx.Session)
	h.mu.Unlock()
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (h *rtspHandler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	h.mu.Lock()
	_, was := h.playing[ctx.Session]
	delete(h.playing, ctx.Session)
	h.mu.Unlock()
	if was {
		h.log.Info("rtsp viewer gone", "err", ctx.Error)
	}
}
