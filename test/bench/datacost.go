package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/porthole-dev/porthole/test/framework"
)

// The data-cost step's camera: camsim's MJPEG at dataFPS frames a second of
// dataWidth x dataHeight, the picture of a typical camera's MJPEG stream.
const (
	dataFPS    = 10
	dataWidth  = 1280
	dataHeight = 720
	// svcMJPEG is the http service with camsim's MJPEG and snapshot.
	svcMJPEG = "cam"
	// tileEvery is how often the phone page's tile refreshes its snapshot.
	tileEvery = 5 * time.Second
)

// dataPreset is one way of watching on the phone page.
type dataPreset struct {
	name  string
	query string // after /.porthole/mjpeg; "" = full
	fps   int    // frames a second it should deliver
}

// dataPresets are the phone page's presets.
var dataPresets = []dataPreset{
	{name: "data saver (320 px, 2 fps)", query: "?fps=2&width=320", fps: 2},
	{name: "normal (640 px, 5 fps)", query: "?fps=5&width=640", fps: 5},
	{name: fmt.Sprintf("full (camera's %dx%d, %d fps)", dataWidth, dataHeight, dataFPS), fps: dataFPS},
}

// countingConn counts the bytes a connection reads and writes: TLS records,
// HTTP headers and all, what a phone's data plan counts (plus TCP/IP headers).
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func (c countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// countingDial dials addr (whatever the address asked for) and counts into n.
func countingDial(addr string, n *atomic.Int64) func(ctx context.Context, network, _ string) (net.Conn, error) {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, n: n}, nil
	}
}

// DataCost measures the bytes a phone moves watching through the relay, at
// each preset of the phone page (the agent's /.porthole/mjpeg of an http
// service with camsim as the camera), the snapshot tiles, and the RTSP main
// stream at s.Bitrate; every stream at once, s.DataWindow each, scaled to MB
// a minute (Value) and a hour.
func DataCost(ctx context.Context, bins Bins, s RTSPScale) []Figure {
	names := []string{}
	for _, p := range dataPresets {
		names = append(names, "data: MJPEG "+p.name)
	}
	names = append(names, fmt.Sprintf("data: snapshot tile (320 px every %.0f s)", tileEvery.Seconds()),
		fmt.Sprintf("data: RTSP main stream (H.264 %.0f Mbit/s)", float64(s.Bitrate)/1e6))
	fail := func(err error) []Figure { return errorFigures(names, err) }
	cam, camAddr, err := startCamsim(ctx, dataFPS, camPassword, "-width", fmt.Sprint(dataWidth), "-height", fmt.Sprint(dataHeight))
	if err != nil {
		return fail(err)
	}
	defer cam.Kill()
	b, err := startRTSPBench(ctx, bins, s, webService{name: svcMJPEG, kind: "http", target: camAddr,
		extra: fmt.Sprintf("camera_login: {username: admin, password: %q}\nmjpeg: /stream.mjpg\nsnapshot: /snapshot.jpg\n", camPassword)})
	if err != nil {
		return fail(err)
	}
	defer b.close()
	base := "https://localhost:" + fmt.Sprint(tcpPort(b.st.addr(svcMJPEG)))
	// a client per stream, logged in, its bytes counted from after the login
	type phone struct {
		c      *http.Client
		n      atomic.Int64
		cookie *http.Cookie
		frames atomic.Int64
		err    error
	}
	newPhone := func() (*phone, error) {
		p := &phone{}
		tr := newTransport(nil, b.st.tls, true)
		tr.DialContext = countingDial(b.st.addr(svcMJPEG), &p.n)
		p.c = &http.Client{Transport: tr, CheckRedirect: noRedirect}
		status, cookie, err := login(ctx, p.c, base, "viewer0", benchPassword)
		if err == nil && cookie == nil {
			err = fmt.Errorf("bench: login answered %d", status)
		}
		p.cookie = cookie
		return p, err
	}
	phones := make([]*phone, len(dataPresets)+1)
	for i := range phones {
		if phones[i], err = newPhone(); err != nil {
			return fail(err)
		}
	}
	// Every stream opens and gets its first frame, then the window of dur
	// starts: the figures are what watching costs once it runs.
	var rtspBytes, rtspFrames atomic.Int64
	var rtspErr error
	dur := s.DataWindow
	sctx, stopStreams := context.WithCancel(ctx)
	defer stopStreams()
	var wg, ready sync.WaitGroup
	for i, pr := range dataPresets {
		p := phones[i]
		ready.Add(1)
		wg.Go(func() {
			once := sync.OnceFunc(ready.Done)
			defer once()
			req, _ := http.NewRequestWithContext(sctx, http.MethodGet, base+"/.porthole/mjpeg"+pr.query, nil)
			req.AddCookie(p.cookie)
			resp, err := p.c.Do(req)
			var mr *multipart.Reader
			if err == nil {
				defer resp.Body.Close()
				mr, err = mjpegParts(resp)
			}
			if err != nil {
				if sctx.Err() == nil {
					p.err = err
				}
				return
			}
			var buf bytes.Buffer
			for nextJPEG(mr, &buf) == nil {
				p.frames.Add(1)
				once()
			}
		})
	}
	ready.Add(1)
	wg.Go(func() {
		once := sync.OnceFunc(ready.Done)
		defer once()
		v, err := playRTSP(b.url("viewer0"), b.cam.epoch, b.st.tls, countingDial(b.st.addr(svcRTSP), &rtspBytes))
		if err != nil {
			rtspErr = err
			return
		}
		defer v.close()
		lo := b.cam.sent()
		wctx, cancel := context.WithTimeout(sctx, 10*time.Second)
		defer cancel()
		framework.PollContext(wctx, 5*time.Millisecond, func() bool { return v.reached(lo) })
		once()
		<-sctx.Done()
		all, _ := v.window(lo, b.cam.sent(), uint32(b.cam.fps))
		rtspFrames.Store(int64(len(all)))
	})
	ready.Wait()
	start := make([]int64, len(phones))
	frames0 := make([]int64, len(phones))
	for i, p := range phones {
		start[i], frames0[i] = p.n.Load(), p.frames.Load()
	}
	rtsp0 := rtspBytes.Load()
	t0 := time.Now()
	tile := phones[len(dataPresets)]
	wg.Go(func() {
		// the tile's refreshes due in the window, the first at its start
		for k := range int((dur + tileEvery - 1) / tileEvery) {
			select {
			case <-time.After(time.Until(t0.Add(time.Duration(k) * tileEvery))):
			case <-sctx.Done():
				return
			}
			req, _ := http.NewRequestWithContext(sctx, http.MethodGet, base+"/.porthole/snapshot.jpg?width=320", nil)
			req.AddCookie(tile.cookie)
			resp, err := tile.c.Do(req)
			if err != nil {
				if sctx.Err() == nil {
					tile.err = err
				}
				return
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || err != nil {
				tile.err = errors.Join(fmt.Errorf("bench: snapshot: %s", resp.Status), err)
				return
			}
			tile.frames.Add(1)
		}
	})
	select {
	case <-time.After(dur):
	case <-ctx.Done():
	}
	secs := time.Since(t0).Seconds()
	end := make([]int64, len(phones))
	frames := make([]int64, len(phones))
	for i, p := range phones {
		end[i], frames[i] = p.n.Load()-start[i], p.frames.Load()-frames0[i]
	}
	rtspN := rtspBytes.Load() - rtsp0
	stopStreams()
	wg.Wait()
	perMin := func(n int64) float64 { return float64(n) / secs * 60 / 1e6 }
	note := func(mb float64) string {
		return fmt.Sprintf("%.0f MB an hour, %.0f kbit/s", mb*60, mb*1e6*8/60/1000)
	}
	var figs []Figure
	for i, pr := range dataPresets {
		p := phones[i]
		if p.err != nil {
			figs = append(figs, errorFigure(names[i], p.err))
			continue
		}
		mb := perMin(end[i])
		expected := int(secs * float64(pr.fps))
		figs = append(figs, Figure{Name: names[i], Value: mb, Unit: "MB/min", Direct: NoBaseline, Ratio: NoBaseline,
			Note: fmt.Sprintf("%s; %d frames in %.0f s (%d at %d fps); bytes on the phone's TCP connection through the relay (TLS included)",
				note(mb), frames[i], secs, expected, pr.fps)})
	}
	if tile.err != nil {
		figs = append(figs, errorFigure(names[len(dataPresets)], tile.err))
	} else {
		mb := perMin(end[len(dataPresets)])
		figs = append(figs, Figure{Name: names[len(dataPresets)], Value: mb, Unit: "MB/min", Direct: NoBaseline, Ratio: NoBaseline,
			Note: fmt.Sprintf("%s; %d snapshots in %.0f s, one keep-alive connection", note(mb), frames[len(dataPresets)], secs)})
	}
	if rtspErr != nil {
		figs = append(figs, errorFigure(names[len(names)-1], rtspErr))
	} else {
		mb := perMin(rtspN)
		figs = append(figs, Figure{Name: names[len(names)-1], Value: mb, Unit: "MB/min", Direct: NoBaseline, Ratio: NoBaseline,
			Note: fmt.Sprintf("%s; %d frames at %d fps, rtsps:// with the TCP transport (TLS, interleaving and RTCP included)", note(mb), rtspFrames.Load(), s.FPS)})
	}
	return figs
}
