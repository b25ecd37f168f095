package rtspgw

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/auth"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/pion/rtp"

	"github.com/porthole-dev/porthole/internal/gateway"
)

// fakeAuth is a viewer store: passwords and lockout.
type fakeAuth struct {
	mu        sync.Mutex
	passwords map[string]string
	locked    map[string]time.Duration // name -> retry after
	calls     int
}

type lockedErr struct{ d time.Duration }

func (e lockedErr) Error() string             { return "locked" }
func (e lockedErr) RetryAfter() time.Duration { return e.d }

var errWrong = errors.New("wrong name or password")

func newFakeAuth() *fakeAuth {
	return &fakeAuth{
		passwords: map[string]string{"alice": "alice-pw", "bob": "bob-pw", "mallory": "m-pw"},
		locked:    map[string]time.Duration{"mallory": 30 * time.Second},
	}
}

func (a *fakeAuth) Basic(_ context.Context, name, password string, _ netip.Addr) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	if d, ok := a.locked[name]; ok {
		return "", lockedErr{d}
	}
	if p, ok := a.passwords[name]; !ok || p != password {
		return "", errWrong
	}
	return name, nil
}

var _ Auth = (*fakeAuth)(nil)

// syncBuffer is a log sink for assertions.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Camera stream paths of the fake camera.
const (
	camMain = "/Streaming/Channels/101"
	camLow  = "/Streaming/Channels/102"
)

// Parameter sets of the synthetic H.264 stream (a real 64x64 baseline SPS).
var (
	testSPS = []byte{0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x1e, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x48, 0x99, 0x20}
	testPPS = []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}
)

// fakeCam is an RTSP camera serving synthetic H.264 at camMain and camLow,
// counting the sessions it serves.
type fakeCam struct {
	addr  string
	srv   *gortsplib.Server
	user  string // "" = no login needed
	pass  string
	media map[string]*camStream

	mu      sync.Mutex
	conns   int            // connections ever
	open    int            // sessions now
	total   int            // sessions ever
	setups  map[string]int // sessions per path
	stopped chan struct{}
	wg      sync.WaitGroup
}

type camStream struct {
	st    *gortsplib.ServerStream
	medi  *description.Media
	forma *format.H264
	enc   interface {
		Encode([][]byte) ([]*rtp.Packet, error)
	}
	aus   [][][]byte
	audio *description.Media // nil: none
	mu    sync.Mutex
	frame uint32
}

type camOptions struct {
	user, pass string
	methods    []auth.VerifyMethod // nil = Basic and Digest
	frameSize  int                 // bytes of each frame's NAL unit; 0 = 200
	manual     bool                // no frames but those pushed by push()
	audio      bool                // a G.711 track too, a packet a frame
	// aus, if set, are real access units (NAL units each) sent in a loop
	// instead of synthetic frames, with sps and pps in the description.
	aus      [][][]byte
	sps, pps []byte
}

// newFakeCam starts a camera on loopback, feeding 50 frames a second unless
// o.manual.
func newFakeCam(t *testing.T, o camOptions) *fakeCam {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &fakeCam{addr: ln.Addr().String(), user: o.user, pass: o.pass, media: map[string]*camStream{},
		setups: map[string]int{}, stopped: make(chan struct{})}
	c.srv = &gortsplib.Server{
		Handler:     c,
		RTSPAddress: c.addr,
		AuthMethods: o.methods,
		Listen:      func(string, string) (net.Listener, error) { return ln, nil },
	}
	if err := c.srv.Start(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{camMain, camLow} {
		forma := &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: testSPS, PPS: testPPS}
		if o.aus != nil {
			forma.SPS, forma.PPS = o.sps, o.pps
		}
		medi := &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{forma}}
		desc := &description.Session{Medias: []*description.Media{medi}}
		var audio *description.Media
		if o.audio {
			audio = &description.Media{Type: description.MediaTypeAudio,
				Formats: []format.Format{&format.G711{PayloadTyp: 0, MULaw: true, SampleRate: 8000, ChannelCount: 1}}}
			desc.Medias = append(desc.Medias, audio)
		}
		st := &gortsplib.ServerStream{Server: c.srv, Desc: desc}
		if err := st.Initialize(); err != nil {
			t.Fatal(err)
		}
		enc, err := forma.CreateEncoder()
		if err != nil {
			t.Fatal(err)
		}
		c.media[p] = &camStream{st: st, medi: medi, forma: forma, enc: enc, aus: o.aus, audio: audio}
	}
	size := o.frameSize
	if size == 0 {
		size = 200
	}
	if !o.manual {
		c.wg.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-c.stopped:
					return
				case <-tick.C:
					for _, s := range c.media {
						s.push(size)
					}
				}
			}
		})
	}
	t.Cleanup(c.close)
	return c
}

// push writes one frame: an IDR (with SPS and PPS) every 25th, else a P
// slice; the frame number is in the first bytes after the NAL header.
func (s *camStream) push(size int) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frame++
	n := s.frame
	if s.aus != nil {
		s.write(s.aus[int(n-1)%len(s.aus)], n)
		return n
	}
	nalu := make([]byte, max(size, 8))
	nalus := [][]byte{nalu}
	if n%25 == 1 {
		nalu[0] = 0x65
		nalus = [][]byte{testSPS, testPPS, nalu}
	} else {
		nalu[0] = 0x41
	}
	nalu[1], nalu[2], nalu[3], nalu[4] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	s.write(nalus, n)
	return n
}

// write sends frame n's NAL units, 25 frames a second of RTP time.
func (s *camStream) write(nalus [][]byte, n uint32) {
	pkts, err := s.enc.Encode(nalus)
	if err != nil {
		panic(err)
	}
	for _, p := range pkts {
		p.Timestamp = n * 3600
		_ = s.st.WritePacketRTP(s.medi, p)
	}
	if s.audio != nil {
		_ = s.st.WritePacketRTP(s.audio, &rtp.Packet{
			Header:  rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(n), Timestamp: n * 320, SSRC: 1},
			Payload: bytes.Repeat([]byte{0xff}, 320),
		})
	}
}

// splitAnnexB splits an H.264 byte stream into access units of NAL units
// (parameter sets and SEI go with the slice that follows them; one slice a
// frame, as x264 makes for small pictures), and returns its SPS and PPS.
func splitAnnexB(b []byte) (aus [][][]byte, sps, pps []byte) {
	var nalus [][]byte
	for len(b) > 0 {
		i := bytes.Index(b, []byte{0, 0, 1})
		if i < 0 {
			nalus = append(nalus, b)
			break
		}
		if i > 0 {
			nalus = append(nalus, bytes.TrimRight(b[:i], "\x00"))
		}
		b = b[i+3:]
	}
	var au [][]byte
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		switch n[0] & 0x1f {
		case 7:
			sps = n
		case 8:
			pps = n
		case 9: // access unit delimiter
			continue
		}
		au = append(au, n)
		if t := n[0] & 0x1f; t == 1 || t == 5 {
			aus = append(aus, au)
			au = nil
		}
	}
	return aus, sps, pps
}

func (c *fakeCam) close() {
	select {
	case <-c.stopped:
		return
	default:
	}
	close(c.stopped)
	c.wg.Wait()
	for _, s := range c.media {
		s.st.Close()
	}
	c.srv.Close()
}

// sessions returns the camera's open sessions and all it ever had.
func (c *fakeCam) sessions() (open, total int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open, c.total
}

func (c *fakeCam) OnConnOpen(*gortsplib.ServerHandlerOnConnOpenCtx) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conns++
}

func (c *fakeCam) OnSessionOpen(*gortsplib.ServerHandlerOnSessionOpenCtx) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open++
	c.total++
}

func (c *fakeCam) OnSessionClose(*gortsplib.ServerHandlerOnSessionCloseCtx) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open--
}

func (c *fakeCam) checkLogin(sc *gortsplib.ServerConn, req *base.Request) (*base.Response, error) {
	if c.user == "" || sc.VerifyCredentials(req, c.user, c.pass) {
		return nil, nil
	}
	return &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
}

func (c *fakeCam) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if res, err := c.checkLogin(ctx.Conn, ctx.Request); res != nil {
		return res, nil, err
	}
	s := c.media[ctx.Path]
	if s == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, s.st, nil
}

func (c *fakeCam) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if res, err := c.checkLogin(ctx.Conn, ctx.Request); res != nil {
		return res, nil, err
	}
	s := c.media[ctx.Path]
	if s == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	c.mu.Lock()
	c.setups[ctx.Path]++
	c.mu.Unlock()
	return &base.Response{StatusCode: base.StatusOK}, s.st, nil
}

func (c *fakeCam) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	if res, err := c.checkLogin(ctx.Conn, ctx.Request); res != nil {
		return res, err
	}
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// gw is a Handler served through a real gateway.Listener on loopback.
type gw struct {
	h     *Handler
	l     *gateway.Listener
	addr  string // 127.0.0.1:port
	auth  *fakeAuth
	log   *syncBuffer
	audit *syncBuffer
	stop  func()
}

// start serves cfg (Target, Path, Auth, Service filled in when empty).
func start(t *testing.T, cfg Config, target string) *gw {
	t.Helper()
	return startTLS(t, cfg, target, nil)
}

// startTLS is start with the gateway terminating TLS (nil: none).
func startTLS(t *testing.T, cfg Config, target string, tc *tls.Config) *gw {
	t.Helper()
	g := &gw{auth: newFakeAuth(), log: &syncBuffer{}, audit: &syncBuffer{}}
	if cfg.Auth == nil {
		cfg.Auth = g.auth
	}
	if cfg.Service == "" {
		cfg.Service = "cam"
	}
	if cfg.Path == "" {
		cfg.Path = camMain
	}
	cfg.Target = target
	cfg.Logger = slog.New(slog.NewTextHandler(g.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Audit = slog.New(slog.NewTextHandler(g.audit, nil))
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.h = h
	anyRule, _ := gateway.ParsePolicy([]string{"any"})
	l, err := gateway.Listen(gateway.Config{
		Service: cfg.Service, Handler: h, Policy: anyRule, Addr: "127.0.0.1:0",
		FirstByteTimeout: gateway.DefaultHandshakeTimeout, TLS: tc,
		Dial: func(context.Context, netip.AddrPort) (gateway.Conn, error) {
			return nil, errors.New("the rtsp handler dials the camera itself")
		},
	})
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	g.l = l
	g.addr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Serve(ctx); close(done) }()
	var once sync.Once
	g.stop = func() {
		once.Do(func() {
			cancel()
			<-done
			h.Close()
			sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
			defer c()
			l.Shutdown(sctx)
		})
	}
	t.Cleanup(g.stop)
	return g
}

// url is the viewer's URL of path (below the service), with a login if
// user is set.
func (g *gw) url(t *testing.T, path, user, pass string) *base.URL {
	t.Helper()
	login := ""
	if user != "" {
		login = user + ":" + pass + "@"
	}
	u, err := base.ParseURL("rtsp://" + login + g.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// viewer is a gortsplib client playing a stream through the gateway.
type viewer struct {
	c       *gortsplib.Client
	desc    *description.Session
	packets atomic.Int64 // all medias
	audio   atomic.Int64
	lost    atomic.Int64
	frames  chan uint32 // frame numbers of the first packet of each frame, if asked
}

// play describes, sets up (TCP unless transport says otherwise) and plays
// path; the error is that of the first step that failed.
func (g *gw) play(t *testing.T, path, user, pass string, transport *gortsplib.Transport) (*viewer, error) {
	t.Helper()
	if transport == nil {
		tcp := gortsplib.TransportTCP
		transport = &tcp
	}
	return g.playWith(t, path, user, pass, &gortsplib.Client{Transport: transport})
}

func (g *gw) playWith(t *testing.T, path, user, pass string, c *gortsplib.Client) (*viewer, error) {
	t.Helper()
	v := &viewer{c: c, frames: make(chan uint32, 4096)}
	c.ReadTimeout = 10 * time.Second
	if c.OnTransportSwitch == nil {
		c.OnTransportSwitch = func(error) {}
	}
	c.OnPacketsLost = func(n uint64) { v.lost.Add(int64(n)) }
	c.OnDecodeError = func(error) {}
	u := g.url(t, path, user, pass)
	if err := c.Start(u.Scheme, u.Host); err != nil {
		return nil, err
	}
	t.Cleanup(c.Close)
	desc, _, err := c.Describe(u)
	if err != nil {
		c.Close()
		return nil, err
	}
	v.desc = desc
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		c.Close()
		return nil, err
	}
	c.OnPacketRTPAny(func(m *description.Media, _ format.Format, p *rtp.Packet) {
		v.packets.Add(1)
		if m.Type == description.MediaTypeAudio {
			v.audio.Add(1)
			return
		}
		// A single NAL unit or the first fragment (FU-A with S bit) of a
		// frame: its number follows the NAL header.
		pl := p.Payload
		switch {
		case len(pl) > 6 && pl[0]&0x1f == 28 && pl[1]&0x80 != 0:
			v.frame(pl[2:])
		case len(pl) > 5 && (pl[0]&0x1f == 1 || pl[0]&0x1f == 5):
			v.frame(pl[1:])
		}
	})
	if _, err := c.Play(nil); err != nil {
		c.Close()
		return nil, err
	}
	return v, nil
}

func (v *viewer) frame(b []byte) {
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	select {
	case v.frames <- n:
	default:
	}
}

// waitPackets waits until v has received n packets in all.
func (v *viewer) waitPackets(t *testing.T, n int64) {
	t.Helper()
	waitFor(t, 20*time.Second, func() bool { return v.packets.Load() >= n },
		func() string { return fmt.Sprintf("%d packets of %d", v.packets.Load(), n) })
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// statusOf is the status code of an error from a gortsplib client, 0 if
// it is not a bad-status error.
func statusOf(err error) base.StatusCode {
	if bad, ok := errors.AsType[liberrors.ErrClientBadStatusCode](err); ok {
		return bad.Code
	}
	return 0
}

// rawConn is a viewer speaking RTSP by hand, to see answers as they are.
type rawConn struct {
	t    *testing.T
	c    net.Conn
	r    *bufio.Reader
	cseq int
}

func (g *gw) raw(t *testing.T) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

// do sends a request and reads its answer (skipping interleaved frames).
func (r *rawConn) do(method base.Method, url string, hdr base.Header) *base.Response {
	r.t.Helper()
	r.send(method, url, hdr)
	return r.read()
}

func (r *rawConn) send(method base.Method, url string, hdr base.Header) {
	r.t.Helper()
	r.cseq++
	u, err := base.ParseURL(url)
	if err != nil {
		r.t.Fatal(err)
	}
	if hdr == nil {
		hdr = base.Header{}
	}
	hdr["CSeq"] = base.HeaderValue{fmt.Sprint(r.cseq)}
	req := base.Request{Method: method, URL: u, Header: hdr}
	b, err := req.Marshal()
	if err != nil {
		r.t.Fatal(err)
	}
	r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) read() *base.Response {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		b, err := r.r.Peek(1)
		if err != nil {
			r.t.Fatalf("reading the answer: %v", err)
		}
		if b[0] == '$' {
			var f base.InterleavedFrame
			if err := f.Unmarshal(r.r); err != nil {
				r.t.Fatal(err)
			}
			continue
		}
		var res base.Response
		if err := res.Unmarshal(r.r); err != nil {
			r.t.Fatalf("reading the answer: %v", err)
		}
		return &res
	}
}

// closed reports whether the server closed the connection (reads, of an
// answer or not, end in EOF or a reset before a 10s deadline).
func (r *rawConn) closed() bool {
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, r.r)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func basicHeader(user, pass string) base.Header {
	return base.Header{"Authorization": base.HeaderValue{"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}}
}
