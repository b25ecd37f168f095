package bench

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"
)

// h264Path is the bench camera's stream path.
const h264Path = "/live"

// Parameter sets of the synthetic H.264 stream (a real 64x64 baseline SPS:
// nothing on the path decodes the pictures).
var (
	benchSPS = []byte{0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x1e, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x48, 0x99, 0x20}
	benchPPS = []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}
)

// stampLen is the bytes after a slice's NAL header that carry the frame's
// number (uint32) and send time (int64 ns since the camera's epoch).
const stampLen = 12

// h264Cam is an RTSP camera in this process (gortsplib's server) sending a
// synthetic H.264 stream at a bit rate and frame rate: an IDR with SPS and
// PPS every second, P slices between, each frame's number and send time in
// the first bytes of its slice (they pass every proxy unmodified). It counts
// the RTSP sessions it serves.
type h264Cam struct {
	addr  string
	epoch time.Time
	fps   int
	srv   *gortsplib.Server
	st    *gortsplib.ServerStream
	medi  *description.Media
	enc   interface {
		Encode([][]byte) ([]*rtp.Packet, error)
	}
	idrSize, pSize int

	mu       sync.Mutex // guards the fields below
	frame    uint32     // frames sent so far
	open     int        // sessions now
	total    int        // sessions ever
	maxOpen  int
	stopped  chan struct{}
	loopDone chan struct{}
}

var (
	_ gortsplib.ServerHandlerOnDescribe     = (*h264Cam)(nil)
	_ gortsplib.ServerHandlerOnSetup        = (*h264Cam)(nil)
	_ gortsplib.ServerHandlerOnPlay         = (*h264Cam)(nil)
	_ gortsplib.ServerHandlerOnSessionOpen  = (*h264Cam)(nil)
	_ gortsplib.ServerHandlerOnSessionClose = (*h264Cam)(nil)
)

// startH264Cam starts a camera on loopback at bitrate bit/s and fps frames a
// second; a keyframe is a fifth of a second's bytes.
func startH264Cam(bitrate, fps int) (*h264Cam, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	perSec := bitrate / 8
	c := &h264Cam{addr: ln.Addr().String(), epoch: time.Now(), fps: fps, stopped: make(chan struct{}), loopDone: make(chan struct{}),
		idrSize: perSec / 5}
	c.pSize = (perSec - c.idrSize) / (fps - 1)
	// a keyframe's burst (~70 packets) fits the default queue of 256 twice
	c.srv = &gortsplib.Server{Handler: c, RTSPAddress: c.addr, Listen: func(string, string) (net.Listener, error) { return ln, nil }}
	if err := c.srv.Start(); err != nil {
		ln.Close()
		return nil, fmt.Errorf("bench: camera: %w", err)
	}
	forma := &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: benchSPS, PPS: benchPPS}
	c.medi = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{forma}}
	c.st = &gortsplib.ServerStream{Server: c.srv, Desc: &description.Session{Medias: []*description.Media{c.medi}}}
	if err := c.st.Initialize(); err != nil {
		c.srv.Close()
		return nil, fmt.Errorf("bench: camera: %w", err)
	}
	if c.enc, err = forma.CreateEncoder(); err != nil {
		c.st.Close()
		c.srv.Close()
		return nil, fmt.Errorf("bench: camera: %w", err)
	}
	go c.run()
	return c, nil
}

// run sends frames on a ticker until close.
func (c *h264Cam) run() {
	defer close(c.loopDone)
	tick := time.NewTicker(time.Second / time.Duration(c.fps))
	defer tick.Stop()
	for {
		select {
		case <-c.stopped:
			return
		case <-tick.C:
			c.push()
		}
	}
}

// push sends the next frame.
func (c *h264Cam) push() {
	c.mu.Lock()
	n := c.frame
	c.frame++
	c.mu.Unlock()
	var nalus [][]byte
	if n%uint32(c.fps) == 0 {
		nalu := make([]byte, c.idrSize)
		nalu[0] = 0x65
		nalus = [][]byte{benchSPS, benchPPS, nalu}
	} else {
		nalu := make([]byte, c.pSize)
		nalu[0] = 0x41
		nalus = [][]byte{nalu}
	}
	slice := nalus[len(nalus)-1]
	for i := 1 + stampLen; i < len(slice); i++ {
		slice[i] = byte(i) | 1 // no zero runs, as in a real slice
	}
	binary.BigEndian.PutUint32(slice[1:], n)
	binary.BigEndian.PutUint64(slice[5:], uint64(time.Since(c.epoch)))
	pkts, err := c.enc.Encode(nalus)
	if err != nil {
		return
	}
	ts := n * uint32(90000/c.fps)
	for _, p := range pkts {
		p.Timestamp = ts
		_ = c.st.WritePacketRTP(c.medi, p)
	}
}

// sent is the number of frames sent so far (the next frame's number).
func (c *h264Cam) sent() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frame
}

// sessions are the sessions open now, ever, and the most at once.
func (c *h264Cam) sessions() (open, total, maxOpen int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open, c.total, c.maxOpen
}

func (c *h264Cam) close() {
	close(c.stopped)
	<-c.loopDone
	c.st.Close()
	c.srv.Close()
}

func (c *h264Cam) OnSessionOpen(*gortsplib.ServerHandlerOnSessionOpenCtx) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open++
	c.total++
	c.maxOpen = max(c.maxOpen, c.open)
}

func (c *h264Cam) OnSessionClose(*gortsplib.ServerHandlerOnSessionCloseCtx) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open--
}

func (c *h264Cam) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Path != h264Path {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, c.st, nil
}

func (c *h264Cam) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Path != h264Path {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, c.st, nil
}

func (c *h264Cam) OnPlay(*gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	return &base.Response{StatusCode: base.StatusOK}, nil
}
