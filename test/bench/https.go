package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/internal/gateway/access"
)

// The https step's services: the camera's web UI (camsim, Digest login),
// and a large download from a backend in this process, as http (TLS at the
// agent, viewer login) and as tcp (bytes as they are) for comparison.
const (
	svcCam     = "cam"
	svcBlob    = "blob"
	svcBlobTCP = "blobtcp"
	// svcBlobHTTP is the http service with tls: off: what the handler costs
	// without TLS.
	svcBlobHTTP = "blobhttp"
	// camPassword is camsim's login, known to the agent only (camera_login).
	camPassword = "camera-secret"
	// sessionsPerName keeps every bench viewer name below access's 32
	// sessions per viewer, so no login evicts another viewer's session.
	sessionsPerName = 25
)

// HTTPS measures issue #8's path: viewers through the relay to the agent's
// http service, TLS ending at the agent, logged in as Porthole viewers, the
// agent logging in to the camera (camsim, Digest). Each figure is beside the
// same thing without that path in the same run: the first MJPEG frame against
// camsim directly, paced viewers against camsim directly, and the download
// through the relay over a tcp service (no TLS, no HTTP handler).
func HTTPS(ctx context.Context, bins Bins, s HTTPSScale) []Figure {
	names := []string{"HTTPS MJPEG added first-frame time p50", "HTTPS MJPEG added first-frame time p95", "HTTPS TLS handshake through the relay p50",
		fmt.Sprintf("%d HTTPS MJPEG viewers x %d fps, min frames of a viewer", s.Viewers, s.FPS),
		fmt.Sprintf("%d HTTPS MJPEG viewers, agent CPU", s.Viewers),
		"HTTPS download through the relay, 1 conn"}
	fail := func(err error) []Figure { return errorFigures(names, err) }
	cam, camAddr, err := startCamsim(ctx, s.FPS, camPassword)
	if err != nil {
		return fail(err)
	}
	defer cam.Kill()
	size := int64(s.DownloadMiB) << 20
	blob, err := startBlobServer(size)
	if err != nil {
		return fail(err)
	}
	defer blob.close()
	hash, err := access.HashPassword(benchPassword)
	if err != nil {
		return fail(err)
	}
	var viewers []string
	for i := range max(1, (s.Viewers+sessionsPerName-1)/sessionsPerName) {
		viewers = append(viewers, fmt.Sprintf("viewer%d", i))
	}
	st, err := startWebStack(ctx, bins, []webService{
		{name: svcCam, kind: "http", target: camAddr, extra: fmt.Sprintf("camera_login: {username: admin, password: %q}\n", camPassword)},
		{name: svcBlob, kind: "http", target: blob.addr()},
		{name: svcBlobTCP, target: blob.addr()},
		{name: svcBlobHTTP, kind: "http", target: blob.addr(), extra: "tls: off\n"},
	}, viewers, hash)
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	var figs []Figure
	figs = append(figs, firstFrames(ctx, st, camAddr, s.FirstFrames, names[:3])...)
	figs = append(figs, mjpegViewerFigures(ctx, st, camAddr, viewers, s, names[3:5])...)
	figs = append(figs, downloadFigure(ctx, st, blob, size, s.Downloads, names[5]))
	return figs
}

// firstFrame is one timed stream opening.
type firstFrame struct {
	handshake time.Duration // TLS handshake (0 for the direct path)
	frame     time.Duration // GET written -> first complete JPEG part
}

// openFirstFrame opens an MJPEG stream with c on a new connection and times
// it: the TLS handshake, then from the moment the request (its last attempt,
// after a camera's 401) is written to the first complete JPEG part.
func openFirstFrame(ctx context.Context, c *http.Client, url string, cookie *http.Cookie) (firstFrame, error) {
	var r firstFrame
	var hsStart, wrote time.Time
	trace := &httptrace.ClientTrace{
		TLSHandshakeStart: func() { hsStart = time.Now() },
		TLSHandshakeDone:  func(tls.ConnectionState, error) { r.handshake = time.Since(hsStart) },
		WroteRequest:      func(httptrace.WroteRequestInfo) { wrote = time.Now() },
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, url, nil)
	if err != nil {
		return r, err
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	resp, err := c.Do(req)
	if err != nil {
		return r, fmt.Errorf("bench: stream: %w", err)
	}
	defer resp.Body.Close()
	mr, err := mjpegParts(resp)
	if err != nil {
		return r, err
	}
	var buf bytes.Buffer
	if err := nextJPEG(mr, &buf); err != nil {
		return r, fmt.Errorf("bench: first frame: %w", err)
	}
	r.frame = time.Since(wrote)
	return r, nil
}

// firstFrames times n stream openings on each path, alternating, while a
// viewer of camsim keeps its encoder running (a new viewer then gets the
// latest frame at once on either path: the figure is the path's, not the
// camera's frame interval).
func firstFrames(ctx context.Context, st *webStack, camAddr string, n int, names []string) []Figure {
	fail := func(err error) []Figure { return errorFigures(names, err) }
	wctx, stopWarm := context.WithCancel(ctx)
	defer stopWarm()
	warm := camClient(nil, camPassword, false)
	warmDone := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(wctx, http.MethodGet, "http://"+camAddr+"/stream.mjpg", nil)
		resp, err := warm.Do(req)
		if err != nil {
			warmDone <- err
			return
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		warmDone <- err
	}()
	base := "https://" + st.addr(svcCam)
	through := st.client(nil, false)
	_, cookie, err := login(ctx, through, base, "viewer0", benchPassword)
	if err != nil || cookie == nil {
		return fail(fmt.Errorf("bench: login: %w", err))
	}
	direct := camClient(nil, camPassword, false)
	// one untimed opening each: the digest challenge is learned (by this
	// client and by the agent), the camera's encoder is running
	if _, err := openFirstFrame(ctx, direct, "http://"+camAddr+"/stream.mjpg", nil); err != nil {
		return fail(err)
	}
	if _, err := openFirstFrame(ctx, through, base+"/stream.mjpg", cookie); err != nil {
		return fail(err)
	}
	var dt, tt, hs []time.Duration
	for range n {
		d, err := openFirstFrame(ctx, direct, "http://"+camAddr+"/stream.mjpg", nil)
		if err != nil {
			return fail(err)
		}
		t, err := openFirstFrame(ctx, through, base+"/stream.mjpg", cookie)
		if err != nil {
			return fail(err)
		}
		dt, tt, hs = append(dt, d.frame), append(tt, t.frame), append(hs, t.handshake)
	}
	stopWarm()
	<-warmDone
	var figs []Figure
	for i, p := range []float64{50, 95} {
		d, t := percentile(dt, p), percentile(tt, p)
		f := Figure{Name: names[i], Value: millis(t - d), Unit: "ms", Direct: millis(d), Ratio: float64(t) / float64(max(d, 1)),
			Target: "< 20 ms added", Pass: t-d < 20*time.Millisecond,
			Note: fmt.Sprintf("through %.2f ms (relay -> agent TLS, session cookie, camera_login Digest) vs camsim directly; %d tries each, new connection each, GET -> first complete JPEG",
				millis(t), n)}
		figs = append(figs, f)
	}
	figs = append(figs, Figure{Name: names[2], Value: millis(percentile(hs, 50)), Unit: "ms", Direct: NoBaseline, Ratio: NoBaseline,
		Note: fmt.Sprintf("p95 %.2f ms, max %.2f ms; full handshake (no resumption), TLS 1.3, ECDSA P-256 self-signed", millis(percentile(hs, 95)), millis(percentile(hs, 100)))})
	return figs
}

// frameCount is what one MJPEG viewer saw in the measured window.
type frameCount struct {
	frames int
	maxGap time.Duration
	// preGap is the longest silence before the window, while the other
	// viewers logged in and opened their streams.
	preGap time.Duration
	login  time.Duration
	err    error
}

// stalled reports whether a viewer's stream stopped for more than stallGap
// or delivered under half of the frames expected.
func (f frameCount) stalled(expected int) bool {
	return f.err != nil || f.maxGap > stallGap || 2*f.frames < expected
}

// window is the measured interval the viewers share: it opens once every
// viewer's stream is open.
type window struct {
	ch    chan struct{}
	start time.Time // set before ch is closed
}

func newWindow() *window { return &window{ch: make(chan struct{})} }

func (w *window) open() { w.start = time.Now(); close(w.ch) }

// opened reports whether the window opened at or before now.
func (w *window) opened(now time.Time) bool {
	select {
	case <-w.ch:
		return !now.Before(w.start)
	default:
		return false
	}
}

// countFrames reads frames until the window has lasted dur, counting those
// that complete inside it, and the longest silence within it (the edges
// count: a stream that stops early has a gap up to the window's end). Frames
// before the window are read and dropped, so none queue up for it; the
// longest silence between them is preGap.
func countFrames(mr *multipart.Reader, w *window, dur time.Duration) frameCount {
	var f frameCount
	var buf bytes.Buffer
	var last, pre time.Time
	for {
		err := nextJPEG(mr, &buf)
		now := time.Now()
		if !w.opened(now) {
			if err != nil {
				f.err = err
				return f
			}
			if !pre.IsZero() {
				f.preGap = max(f.preGap, now.Sub(pre))
			}
			pre = now
			continue
		}
		if last.IsZero() {
			last = w.start
		}
		end := w.start.Add(dur)
		if !now.Before(end) {
			f.maxGap = max(f.maxGap, end.Sub(last))
			return f
		}
		if err != nil {
			f.maxGap, f.err = max(f.maxGap, now.Sub(last)), err
			return f
		}
		f.frames++
		f.maxGap = max(f.maxGap, now.Sub(last))
		last = now
	}
}

// watchMJPEG runs n viewers of one stream: open(i) logs in (when the path
// has a login) and opens viewer i's stream; once all are open, each counts
// the frames of the same window of dur. A stream that is silent at the
// window's end is closed stallGap later.
//
// at, when not nil, is called when the window opens and when it ends (with
// the streams still open), for the daemons' CPU and memory.
func watchMJPEG(ctx context.Context, n int, dur time.Duration, open func(ctx context.Context, i int) (*http.Response, time.Duration, error), at func(end bool)) []frameCount {
	res := make([]frameCount, n)
	w := newWindow()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var opened, wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		opened.Add(1)
		go func() {
			defer wg.Done()
			resp, lt, err := open(ctx, i)
			res[i].login = lt
			if err == nil {
				// open used ctx: its end (stallGap after the window) ends the read
				defer resp.Body.Close()
			}
			var mr *multipart.Reader
			if err == nil {
				mr, err = mjpegParts(resp)
			}
			opened.Done()
			if err != nil {
				res[i].err = err
				return
			}
			f := countFrames(mr, w, dur)
			f.login = lt
			res[i] = f
		}()
	}
	opened.Wait()
	if at == nil {
		at = func(bool) {}
	}
	at(false)
	w.open()
	ended := make(chan struct{})
	t := time.AfterFunc(dur, func() {
		defer close(ended)
		at(true)
		time.AfterFunc(stallGap, cancel)
	})
	defer t.Stop()
	wg.Wait()
	<-ended
	return res
}

// mjpegViewerFigures runs s.Viewers viewers of camsim's stream for
// s.ViewerTime directly, then as many logged-in viewers through the relay
// (each its own login, session and TLS connection, 20 per source address),
// and reports the fewest frames a viewer got, and the relay's and agent's
// CPU and memory while they watched.
func mjpegViewerFigures(ctx context.Context, st *webStack, camAddr string, viewers []string, s HTTPSScale, names []string) []Figure {
	const perSource = 20
	n, dur := s.Viewers, s.ViewerTime
	expected := int(dur.Seconds() * float64(s.FPS))
	direct := watchMJPEG(ctx, n, dur, func(ctx context.Context, i int) (*http.Response, time.Duration, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+camAddr+"/stream.mjpg", nil)
		resp, err := camClient(viewerSource(i, perSource).IP, camPassword, true).Do(req)
		return resp, 0, err
	}, nil)
	base := "https://" + st.addr(svcCam)
	var relayCPU, agentCPU [2]time.Duration
	var relayRSS, agentRSS int64
	var cpuErr error
	through := watchMJPEG(ctx, n, dur, func(ctx context.Context, i int) (*http.Response, time.Duration, error) {
		c := st.client(viewerSource(i, perSource).IP, true)
		t0 := time.Now()
		status, cookie, err := login(ctx, c, base, viewers[i/sessionsPerName], benchPassword)
		lt := time.Since(t0)
		if err == nil && cookie == nil {
			err = fmt.Errorf("bench: login answered %d", status)
		}
		if err != nil {
			return nil, lt, err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/stream.mjpg", nil)
		req.AddCookie(cookie)
		resp, err := c.Do(req)
		return resp, lt, err
	}, func(end bool) {
		k := 0
		if end {
			k = 1
			var e1, e2 error
			relayRSS, e1 = st.Relay.RSS()
			agentRSS, e2 = st.Agent.RSS()
			cpuErr = errors.Join(cpuErr, e1, e2)
		}
		var err error
		relayCPU[k], agentCPU[k], err = st.CPU()
		cpuErr = errors.Join(cpuErr, err)
	})
	sum := func(fc []frameCount) (minFrames, stalls, errs int, maxGap, preGap time.Duration, firstErr error, logins []time.Duration) {
		minFrames = -1
		for _, f := range fc {
			if minFrames < 0 || f.frames < minFrames {
				minFrames = f.frames
			}
			if f.stalled(expected) {
				stalls++
			}
			if f.err != nil {
				errs++
				if firstErr == nil {
					firstErr = f.err
				}
			}
			maxGap, preGap = max(maxGap, f.maxGap), max(preGap, f.preGap)
			logins = append(logins, f.login)
		}
		return
	}
	dMin, dStalls, dErrs, dGap, _, dFirst, _ := sum(direct)
	tMin, tStalls, tErrs, tGap, tPre, tFirst, logins := sum(through)
	var frames []time.Duration // frames per viewer, as durations to reuse percentile
	for _, f := range through {
		frames = append(frames, time.Duration(f.frames))
	}
	f := Figure{Name: names[0], Value: float64(tMin), Unit: "frames", Direct: float64(dMin), Ratio: float64(tMin) / float64(max(dMin, 1)),
		Target: "no stalled viewer", Pass: tStalls == 0 && tErrs == 0,
		Note: fmt.Sprintf("%.0fs, %d expected; median %d; max gap %.0f ms (direct %.0f); stalled (gap > 1s or < half the frames) %d (direct %d); errors %d (direct %d); logins p50 %.0f ms, max %.0f ms, before the window, in which open streams' longest gap was %.0f ms; %d source addresses",
			dur.Seconds(), expected, int(percentile(frames, 50)), millis(tGap), millis(dGap), tStalls, dStalls, tErrs, dErrs,
			millis(percentile(logins, 50)), millis(percentile(logins, 100)), millis(tPre), (n+perSource-1)/perSource)}
	if int(percentile(frames, 50)) > expected {
		f.Note += "; more frames than the camera made in the window: a backlog from before it caught up"
	}
	if tFirst != nil {
		f.Note += "; first error: " + tFirst.Error()
	}
	if dFirst != nil {
		f.Note += "; DIRECT BASELINE ERROR: " + dFirst.Error()
	}
	secs := dur.Seconds()
	res := Figure{Name: names[1], Value: 100 * (agentCPU[1] - agentCPU[0]).Seconds() / secs, Unit: "% core", Direct: NoBaseline, Ratio: NoBaseline,
		Note: fmt.Sprintf("relay %.0f%% core; RSS at the window's end: agent %.1f MiB, relay %.1f MiB (with %d streams open)",
			100*(relayCPU[1]-relayCPU[0]).Seconds()/secs, float64(agentRSS)/1024, float64(relayRSS)/1024, n-tErrs)}
	if cpuErr != nil {
		res = errorFigure(names[1], cpuErr)
	}
	return []Figure{f, res}
}

// downloadFigure downloads size bytes from the blob server through the relay
// rounds times per path, alternating: over the http service (TLS at the
// agent, Basic login) and over the tcp service (plain HTTP, bytes as they
// are), and reports HTTPS's throughput beside plain TCP's, with the relay's
// and the agent's CPU seconds per GB on each path; the http service with
// tls: off and the backend directly are in the note, to tell the handler's
// cost from TLS's.
func downloadFigure(ctx context.Context, st *webStack, blob *blobServer, size int64, rounds int, name string) Figure {
	https := st.client(nil, false)
	plain := &http.Client{Transport: newTransport(nil, nil, false)}
	get := func(c *http.Client, url string, basic bool) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if basic {
			req.SetBasicAuth("viewer0", benchPassword)
		}
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			return 0, fmt.Errorf("bench: download: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("bench: download: %s", resp.Status)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		if err == nil && n != size {
			err = fmt.Errorf("bench: download: %d of %d bytes", n, size)
		}
		return time.Since(start), err
	}
	// the Basic check is cached after the first request: the rounds time
	// the data path, not argon2
	if _, err := get(https, "https://"+st.addr(svcBlob)+"/blob", true); err != nil {
		return errorFigure(name, err)
	}
	type path struct {
		url   string
		c     *http.Client
		basic bool
		took  time.Duration
		relay time.Duration
		agent time.Duration
	}
	paths := []*path{{url: "https://" + st.addr(svcBlob) + "/blob", c: https, basic: true},
		{url: "http://" + st.addr(svcBlobTCP) + "/blob", c: plain}, {url: "http://" + blob.addr() + "/blob", c: plain},
		{url: "http://" + st.addr(svcBlobHTTP) + "/blob", c: plain, basic: true}}
	for range rounds {
		for _, p := range paths {
			r0, a0, err := st.CPU()
			if err != nil {
				return errorFigure(name, err)
			}
			took, err := get(p.c, p.url, p.basic)
			if err != nil {
				return errorFigure(name, err)
			}
			r1, a1, err := st.CPU()
			if err != nil {
				return errorFigure(name, err)
			}
			p.took, p.relay, p.agent = p.took+took, p.relay+r1-r0, p.agent+a1-a0
		}
	}
	gb := float64(size) * float64(rounds) / 1e9
	gbps := func(p *path) float64 { return gb * 8 / p.took.Seconds() }
	h, t, d, p := paths[0], paths[1], paths[2], paths[3]
	return Figure{Name: name, Value: gbps(h), Unit: "Gbit/s", Direct: gbps(t), Ratio: gbps(h) / gbps(t),
		Target: ">= 80% of plain TCP", Pass: gbps(h) >= 0.8*gbps(t),
		Note: fmt.Sprintf("DIRECT = the same download through the relay over a tcp service; %d x %d MiB each, alternating; CPU s/GB HTTPS: relay %.2f, agent %.2f; plain TCP: relay %.2f, agent %.2f; the http handler without TLS (tls: off) %.2f Gbit/s, relay %.2f, agent %.2f s/GB; backend directly %.2f Gbit/s",
			rounds, size>>20, h.relay.Seconds()/gb, h.agent.Seconds()/gb, t.relay.Seconds()/gb, t.agent.Seconds()/gb,
			gbps(p), p.relay.Seconds()/gb, p.agent.Seconds()/gb, gbps(d))}
}
