package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/porthole-dev/porthole/internal/gateway/access"
	"github.com/porthole-dev/porthole/test/framework"
)

// RTSPScale sizes the "rtsp-viewers", "rtsp-slow" and "data-cost" steps
// (issue #9: the agent's RTSP proxy, and what watching costs in data).
type RTSPScale struct {
	// Viewers watch one camera of Bitrate bit/s at FPS through the relay.
	Viewers int
	Bitrate int
	FPS     int
	// Fast viewers watch beside one reading at SlowBitrate bit/s.
	Fast        int
	SlowBitrate int
	// SlowMax is how long the slow viewer may stay, after its window, until
	// the agent's queue for it overflows and it loses packets.
	SlowMax time.Duration
	// Window is each measured interval.
	Window time.Duration
	// DataWindow is how long each preset of the phone page is measured.
	DataWindow time.Duration
}

// svcRTSP is the bench camera's rtsp service.
const svcRTSP = "live"

// rtspBench is the H.264 camera in this process and a relay and agent whose
// service svcRTSP proxies it (plus more services).
type rtspBench struct {
	cam *h264Cam
	st  *webStack
}

func (b *rtspBench) close() {
	if b.st != nil {
		b.st.Close()
	}
	if b.cam != nil {
		b.cam.close()
	}
}

// rtspViewerNames are the viewer logins of the RTSP steps: "slow" is the
// throttled one, so its audit record is told apart.
var rtspViewerNames = []string{"viewer0", "slow"}

// startRTSPBench starts the camera and the stack with the rtsp service
// first and more services after it.
func startRTSPBench(ctx context.Context, bins Bins, s RTSPScale, more ...webService) (*rtspBench, error) {
	b := &rtspBench{}
	var err error
	if b.cam, err = startH264Cam(s.Bitrate, s.FPS); err != nil {
		return nil, err
	}
	hash, err := access.HashPassword(benchPassword)
	if err != nil {
		b.close()
		return nil, err
	}
	svcs := append([]webService{{name: svcRTSP, kind: "rtsp", target: b.cam.addr, extra: "path: " + h264Path + "\n"}}, more...)
	if b.st, err = startWebStack(ctx, bins, svcs, rtspViewerNames, hash); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

// url is the rtsps:// URL of the service through the relay, with name's login
// ("localhost": the certificate's name; the dialer goes to 127.0.0.1).
func (b *rtspBench) url(name string) string {
	return fmt.Sprintf("rtsps://%s@localhost:%d/%s", url.UserPassword(name, benchPassword), tcpPort(b.st.addr(svcRTSP)), svcRTSP)
}

// playThrough opens n viewers through the relay at once.
func (b *rtspBench) playThrough(n int) ([]*rtspViewer, error) {
	vs := make([]*rtspViewer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			vs[i], errs[i] = playRTSP(b.url("viewer0"), b.cam.epoch, b.st.tls, fixedDial(b.st.addr(svcRTSP)))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeViewers(vs)
		return nil, err
	}
	b.drain(vs)
	return vs, nil
}

// drain waits (at most 10 s) until every viewer has a frame sent after the
// call: the backlog of the logins (argon2 at the agent) and the first
// keyframes is gone, and what a window measures is the steady state.
func (b *rtspBench) drain(vs []*rtspViewer) {
	n := b.cam.sent()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	framework.PollContext(ctx, 5*time.Millisecond, func() bool {
		for _, v := range vs {
			if !v.reached(n) {
				return false
			}
		}
		return true
	})
}

// rssSampler reads the agent's and the relay's RSS, and the agent's heap in
// use, every half second until stopped.
type rssSampler struct {
	stop          func()
	wg            sync.WaitGroup
	agent, relay  int64 // highest RSS, KiB
	first, last   int64 // the agent's first and last RSS reading
	agentLo, nRSS int64 // the agent's lowest RSS; readings
	heapLo        int64 // the agent's lowest heap in use, KiB (-1: none read)
}

func sampleRSS(ctx context.Context, st *webStack) *rssSampler {
	r := &rssSampler{heapLo: -1}
	ctx, r.stop = context.WithCancel(ctx)
	r.wg.Go(func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			if a, err := st.Agent.RSS(); err == nil {
				if r.nRSS == 0 {
					r.first, r.agentLo = a, a
				}
				r.agent, r.last, r.agentLo = max(r.agent, a), a, min(r.agentLo, a)
				r.nRSS++
			}
			if h, err := st.agentHeap(ctx); err == nil && (r.heapLo < 0 || h < r.heapLo) {
				r.heapLo = h
			}
			if rl, err := st.Relay.RSS(); err == nil {
				r.relay = max(r.relay, rl)
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	})
	return r
}

// done stops sampling; the fields are read after it.
func (r *rssSampler) done() { r.stop(); r.wg.Wait() }

func closeViewers(vs []*rtspViewer) {
	for _, v := range vs {
		if v != nil {
			v.close()
		}
	}
}

// rtspWindow is what viewers received of the frames sent in one window.
type rtspWindow struct {
	sent   int
	frames []int           // complete frames per viewer
	delays []time.Duration // every viewer's frame delays
	key    []time.Duration // every viewer's keyframe delays
}

func (w rtspWindow) minFrames() int {
	m := -1
	for _, f := range w.frames {
		if m < 0 || f < m {
			m = f
		}
	}
	return max(m, 0)
}

// measure waits dur while vs play, then up to a second more for the last
// frame of the window to reach them, and reads what each got of its frames.
// at, when not nil, is called at the window's start and end.
func (b *rtspBench) measure(ctx context.Context, vs []*rtspViewer, dur time.Duration, at func(end bool)) rtspWindow {
	if at == nil {
		at = func(bool) {}
	}
	at(false)
	lo := b.cam.sent()
	select {
	case <-time.After(dur):
	case <-ctx.Done():
	}
	hi := b.cam.sent()
	at(true)
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	framework.PollContext(wctx, 5*time.Millisecond, func() bool {
		for _, v := range vs {
			if !v.reached(hi - 1) {
				return false
			}
		}
		return true
	})
	w := rtspWindow{sent: int(hi - lo)}
	for _, v := range vs {
		ds, key := v.window(lo, hi, uint32(b.cam.fps))
		w.frames = append(w.frames, len(ds))
		w.delays = append(w.delays, ds...)
		w.key = append(w.key, key...)
	}
	return w
}

// RTSPViewers measures s.Viewers RTSP viewers (gortsplib, TCP, rtsps:// with
// a viewer login) of one H.264 camera through the relay to the agent's rtsp
// service: the camera's sessions, frames and frame delay against one viewer
// of the camera directly in the same run, and the agent's CPU and memory per
// viewer.
func RTSPViewers(ctx context.Context, bins Bins, s RTSPScale) []Figure {
	n := s.Viewers
	names := []string{fmt.Sprintf("RTSP %d viewers, camera sessions", n), fmt.Sprintf("RTSP %d viewers, fewest frames of a viewer", n),
		"RTSP frame delay p50", "RTSP frame delay p99", "RTSP agent CPU per viewer", "RTSP agent memory per viewer"}
	fail := func(err error) []Figure { return errorFigures(names, err) }
	b, err := startRTSPBench(ctx, bins, s)
	if err != nil {
		return fail(err)
	}
	defer b.close()
	direct, err := playRTSP("rtsp://"+b.cam.addr+h264Path, b.cam.epoch, nil, nil)
	if err != nil {
		return fail(err)
	}
	dw := b.measure(ctx, []*rtspViewer{direct}, s.Window, nil)
	direct.close()
	// One viewer through the agent for a window, for the memory figure: the
	// agent's lowest RSS with 1 viewer and with n, both while frames flow
	// (the garbage collector runs; a login's argon2 memory, tens of MiB, is
	// garbage by then).
	one, err := b.playThrough(1)
	if err != nil {
		return fail(err)
	}
	r1 := sampleRSS(ctx, b.st)
	b.measure(ctx, one, s.Window, nil)
	r1.done()
	closeViewers(one)
	// the agent idle, the direct viewer's and the agent's sessions gone
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	framework.PollContext(wctx, 10*time.Millisecond, func() bool { open, _, _ := b.cam.sessions(); return open == 0 })
	if open, _, _ := b.cam.sessions(); open != 0 {
		return fail(fmt.Errorf("bench: %d camera sessions still open 20 s after their viewers left", open))
	}
	_, total0, _ := b.cam.sessions()
	vs, err := b.playThrough(n)
	if err != nil {
		return fail(err)
	}
	defer closeViewers(vs)
	var relayCPU, agentCPU, selfCPU [2]time.Duration
	var cpuErr error
	rn := sampleRSS(ctx, b.st)
	tw := b.measure(ctx, vs, s.Window, func(end bool) {
		k := 0
		if end {
			k = 1
		}
		var err error
		relayCPU[k], agentCPU[k], err = b.st.CPU()
		cpuErr = errors.Join(cpuErr, err)
		selfCPU[k], err = framework.ProcCPUTime(os.Getpid())
		cpuErr = errors.Join(cpuErr, err)
	})
	rn.done()
	open, total1, _ := b.cam.sessions()
	if cpuErr != nil {
		return fail(cpuErr)
	}
	sessions := total1 - total0
	figs := []Figure{{Name: names[0], Value: float64(sessions), Unit: "sessions", Direct: NoBaseline, Ratio: NoBaseline,
		Target: "1", Pass: sessions == 1 && open == 1,
		Note: fmt.Sprintf("sessions the agent opened at the camera for %d viewers; open at the window's end: %d", n, open)}}
	tMin, dMin := tw.minFrames(), dw.minFrames()
	figs = append(figs, Figure{Name: names[1], Value: float64(tMin), Unit: "frames", Direct: float64(dMin), Ratio: float64(tMin) / float64(max(dMin, 1)),
		Target: "every viewer every frame", Pass: tMin == tw.sent,
		Note: fmt.Sprintf("%d frames sent in %.0fs through (%d in the direct window); %.1f Mbit/s H.264 at %d fps, keyframe (%d KB) every second; complete frames only",
			tw.sent, s.Window.Seconds(), dw.sent, float64(s.Bitrate)/1e6, s.FPS, b.cam.idrSize/1000)})
	for i, p := range []float64{50, 99} {
		t, d := percentile(tw.delays, p), percentile(dw.delays, p)
		f := Figure{Name: names[2+i], Value: millis(t), Unit: "ms", Direct: millis(d), Ratio: float64(t) / float64(max(d, 1)),
			Note: fmt.Sprintf("camera's send -> last packet of the frame at the viewer; %d frames through (max %.1f ms), DIRECT = 1 viewer of the camera in the same run; keyframes alone (%d KB, 1 in %d: the top %.0f%%) p50 %.1f ms, p99 %.1f ms (direct %.1f, %.1f)",
				len(tw.delays), millis(percentile(tw.delays, 100)), b.cam.idrSize/1000, s.FPS, 100/float64(s.FPS),
				millis(percentile(tw.key, 50)), millis(percentile(tw.key, 99)), millis(percentile(dw.key, 50)), millis(percentile(dw.key, 99)))}
		if p == 99 {
			f.Target, f.Pass = "< 100 ms", t < 100*time.Millisecond
		}
		figs = append(figs, f)
	}
	secs := s.Window.Seconds()
	agentPct := 100 * (agentCPU[1] - agentCPU[0]).Seconds() / secs
	figs = append(figs, Figure{Name: names[4], Value: agentPct / float64(n), Unit: "% core", Direct: NoBaseline, Ratio: NoBaseline,
		Note: fmt.Sprintf("agent %.1f%% core for %d viewers (TLS, RTSP fan-out), relay %.1f%% core, the bench process (camera and viewers) %.0f%% core; from /proc/<pid>/stat over the window",
			agentPct, n, 100*(relayCPU[1]-relayCPU[0]).Seconds()/secs, 100*(selfCPU[1]-selfCPU[0]).Seconds()/secs)})
	figs = append(figs, Figure{Name: names[5], Value: float64(rn.heapLo) / float64(n), Unit: "KiB", Direct: NoBaseline, Ratio: NoBaseline,
		Target: "reported (an upper bound)", Pass: rn.heapLo >= 0,
		Note: fmt.Sprintf("the agent's whole Go heap in use at its lowest while %d viewers watch (%.1f MiB, its /metrics every 0.5 s) over %d: everything the agent holds, camera session included, so at most this per viewer; with 1 viewer the lowest was %.1f MiB (a login's argon2 takes 19 MiB, garbage until the next collection, which a single stream may not bring within the window); agent RSS lowest %.1f MiB with %d viewers (highest %.1f), %.1f with 1",
			n, float64(rn.heapLo)/1024, n, float64(r1.heapLo)/1024, float64(rn.agentLo)/1024, n, float64(rn.agent)/1024, float64(r1.agentLo)/1024)})
	return figs
}

// RTSPSlow measures s.Fast RTSP viewers through the relay alone, then with
// one more viewer whose connection reads at s.SlowBitrate, in the same run:
// the fast viewers' frame delay and frames, the agent's RSS during the
// second window, and what the slow one lost (the audit's packets_dropped).
func RTSPSlow(ctx context.Context, bins Bins, s RTSPScale) []Figure {
	names := []string{fmt.Sprintf("RTSP %d fast viewers' p99 frame delay beside a %.0f Mbit/s one", s.Fast, float64(s.SlowBitrate)/1e6),
		"RTSP fast viewers' fewest frames beside the slow one", "RTSP slow viewer: agent RSS growth"}
	fail := func(err error) []Figure { return errorFigures(names, err) }
	b, err := startRTSPBench(ctx, bins, s)
	if err != nil {
		return fail(err)
	}
	defer b.close()
	fast, err := b.playThrough(s.Fast)
	if err != nil {
		return fail(err)
	}
	defer closeViewers(fast)
	ra := sampleRSS(ctx, b.st)
	alone := b.measure(ctx, fast, s.Window, nil)
	ra.done()
	slow, err := playRTSP(b.url("slow"), b.cam.epoch, b.st.tls, throttledDial(b.st.addr(svcRTSP), s.SlowBitrate))
	if err != nil {
		return fail(err)
	}
	type ended struct {
		err error
		at  time.Time
	}
	slowDone := make(chan ended, 1)
	var slowEnded atomic.Bool
	go func() { err := slow.c.Wait(); slowEnded.Store(true); slowDone <- ended{err, time.Now()} }()
	b.drain(fast)
	rb := sampleRSS(ctx, b.st)
	joined := time.Now()
	beside := b.measure(ctx, append(fast, slow), s.Window, nil)
	// the slow viewer stays until it loses packets (the agent's queue for
	// it full, after every buffer on the way: the relay's socket to it, the
	// tunnel's flow-control window), at most SlowMax
	lctx, cancel := context.WithTimeout(ctx, s.SlowMax)
	framework.PollContext(lctx, 50*time.Millisecond, func() bool { return slow.lost.Load() > 0 || slowEnded.Load() })
	cancel()
	lossAfter := fmt.Sprintf("no loss it saw in %.0f s", time.Since(joined).Seconds())
	if slow.lost.Load() > 0 {
		lossAfter = fmt.Sprintf("its first loss %.0f s after it joined", time.Since(joined).Seconds())
	}
	rb.done()
	behind := b.cam.sent() - 1
	if slow.reached(0) {
		slow.mu.Lock()
		behind -= slow.last
		slow.mu.Unlock()
	}
	cut := "still playing at the window's end"
	select {
	case e := <-slowDone:
		cut = fmt.Sprintf("cut by the agent %.0f s after it joined (%v)", e.at.Sub(joined).Seconds(), e.err)
	default:
		slow.close()
		<-slowDone
	}
	dropped, err := auditDropped(ctx, b.st.dir, "slow")
	if err != nil {
		dropped = -1
	}
	fastOnly := func(w rtspWindow, k int) (rtspWindow, []time.Duration) {
		// the slow viewer's delays are the last of w.delays
		slowN := 0
		if k < len(w.frames) {
			slowN = w.frames[k]
		}
		return rtspWindow{sent: w.sent, frames: w.frames[:k]}, w.delays[:len(w.delays)-slowN]
	}
	bw, bDelays := fastOnly(beside, s.Fast)
	a99, b99 := percentile(alone.delays, 99), percentile(bDelays, 99)
	slowFrames := beside.frames[s.Fast]
	var figs []Figure
	figs = append(figs, Figure{Name: names[0], Value: millis(b99), Unit: "ms", Direct: millis(a99), Ratio: float64(b99) / float64(max(a99, 1)),
		Target: "within 20%", Pass: float64(b99) <= 1.2*float64(a99),
		Note: fmt.Sprintf("DIRECT = the same %d viewers without the slow one, the window before; p50 %.1f ms vs %.1f ms", s.Fast,
			millis(percentile(bDelays, 50)), millis(percentile(alone.delays, 50)))})
	figs = append(figs, Figure{Name: names[1], Value: float64(bw.minFrames()), Unit: "frames", Direct: float64(alone.minFrames()), Ratio: float64(bw.minFrames()) / float64(max(alone.minFrames(), 1)),
		Target: "every frame", Pass: bw.minFrames() == bw.sent,
		Note: fmt.Sprintf("%d sent in the window with the slow viewer, %d in the one before (DIRECT)", bw.sent, alone.sent)})
	droppedNote := fmt.Sprintf("%d packets dropped from its queue (audit close)", dropped)
	if dropped < 0 {
		droppedNote = "no audit close record: " + err.Error()
	}
	growth := float64(rb.agentLo-ra.agentLo) / 1024
	figs = append(figs, Figure{Name: names[2], Value: growth, Unit: "MiB", Direct: NoBaseline, Ratio: NoBaseline,
		Target: "bounded (< 8 MiB)", Pass: growth < 8,
		Note: fmt.Sprintf("agent's lowest RSS while the slow viewer watched (%d readings, %.0f s) minus in the window before it came: %.1f vs %.1f MiB (highest %.1f vs %.1f; first %.1f, last %.1f); relay's highest %.1f vs %.1f MiB; the slow viewer got %d of %d frames of its window complete, was %.1f s behind at its end; then %s, %d packets missed; %s; %s",
			rb.nRSS, time.Since(joined).Seconds(), float64(rb.agentLo)/1024, float64(ra.agentLo)/1024, float64(rb.agent)/1024, float64(ra.agent)/1024,
			float64(rb.first)/1024, float64(rb.last)/1024, float64(rb.relay)/1024, float64(ra.relay)/1024,
			slowFrames, beside.sent, float64(behind)/float64(s.FPS), lossAfter, slow.lost.Load(), cut, droppedNote)})
	return figs
}

// auditDropped waits for the agent's audit "close" record of viewer and
// returns its packets_dropped.
func auditDropped(ctx context.Context, stackDir, viewer string) (int64, error) {
	path := filepath.Join(stackDir, "agent-state", "audit.log")
	var dropped int64 = -1
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := framework.PollContext(wctx, 20*time.Millisecond, func() bool {
		f, err := os.Open(path)
		if err != nil {
			return false
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var rec struct {
				Msg     string `json:"msg"`
				Viewer  string `json:"viewer"`
				Dropped *int64 `json:"packets_dropped"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "close" && rec.Viewer == viewer && rec.Dropped != nil {
				dropped = *rec.Dropped
				return true
			}
		}
		return false
	})
	if err != nil {
		return -1, fmt.Errorf("%s: %w", path, err)
	}
	return dropped, nil
}
