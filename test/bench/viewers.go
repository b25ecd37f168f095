package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/porthole-dev/porthole/test/framework"
	"io"
	"net"
	"sync"
	"time"
)

// A paced camera stream: 4 Mbit/s as 25 chunks a second of 20000 bytes, each
// starting with the time it was due (nanoseconds since the run's epoch) and its
// sequence number, the rest filled with a byte derived from the sequence number.
const (
	chunkSize     = 20000
	chunkInterval = 40 * time.Millisecond
	// stallGap is the longest silence between two chunks that still counts as a
	// smooth stream (a player's buffer hides less than this).
	stallGap = time.Second
)

// pacedSource sends chunks due at start+k*chunkInterval for dur. The due time, not
// the time the write happened, is stamped, so back-pressure shows up as delay.
func pacedSource(epoch time.Time, dur time.Duration) func(net.Conn) {
	return func(c net.Conn) {
		n := int(dur / chunkInterval)
		buf := make([]byte, chunkSize)
		start := time.Now()
		t := time.NewTimer(0)
		defer t.Stop()
		for k := range n {
			due := start.Add(time.Duration(k) * chunkInterval)
			t.Reset(time.Until(due))
			<-t.C
			binary.BigEndian.PutUint64(buf[0:], uint64(due.Sub(epoch)))
			binary.BigEndian.PutUint64(buf[8:], uint64(k))
			fill := byte(k*7 + 1)
			for i := 16; i < len(buf); i++ {
				buf[i] = fill
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
		c.(*net.TCPConn).CloseWrite()
	}
}

// viewerResult is what one viewer saw.
type viewerResult struct {
	delays []time.Duration
	bytes  int64
	maxGap time.Duration
	err    error
}

// watch reads chunks from c until EOF, checking order and content.
func watch(c net.Conn, epoch time.Time) viewerResult {
	var r viewerResult
	buf := make([]byte, chunkSize)
	last := time.Now()
	for k := uint64(0); ; k++ {
		_, err := io.ReadFull(c, buf)
		if errors.Is(err, io.EOF) {
			return r
		}
		if err != nil {
			r.err = err
			return r
		}
		now := time.Now()
		r.bytes += chunkSize
		r.maxGap = max(r.maxGap, now.Sub(last))
		last = now
		due := epoch.Add(time.Duration(binary.BigEndian.Uint64(buf[0:])))
		r.delays = append(r.delays, now.Sub(due))
		if seq := binary.BigEndian.Uint64(buf[8:]); seq != k {
			r.err = fmt.Errorf("chunk %d arrived as number %d", seq, k)
			return r
		}
		fill := byte(k*7 + 1)
		if buf[16] != fill || buf[chunkSize-1] != fill {
			r.err = fmt.Errorf("chunk %d corrupted", k)
			return r
		}
	}
}

// viewerRun is n viewers watching for dur through addr.
type viewerRun struct {
	p99, max        time.Duration
	bytes, expected int64
	stalls          int
	maxGap          time.Duration
	errs            int
	firstErr        error
}

func runViewers(ctx context.Context, addr string, epoch time.Time, n int, dur time.Duration) viewerRun {
	results := make([]viewerResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: viewerSource(i, 20)}
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				results[i].err = err
				return
			}
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
			defer stop()
			results[i] = watch(c, epoch)
		}()
	}
	wg.Wait()
	var run viewerRun
	var all []time.Duration
	for _, r := range results {
		all = append(all, r.delays...)
		run.bytes += r.bytes
		run.maxGap = max(run.maxGap, r.maxGap)
		if r.maxGap > stallGap {
			run.stalls++
		}
		if r.err != nil {
			run.errs++
			if run.firstErr == nil {
				run.firstErr = r.err
			}
		}
	}
	run.expected = int64(n) * int64(dur/chunkInterval) * chunkSize
	run.p99 = percentile(all, 99)
	if len(all) > 0 {
		run.max = all[len(all)-1]
	}
	return run
}

// Viewers runs n concurrent viewers, each receiving a paced 4 Mbit/s camera
// stream for dur, first directly from the target, then through a relay and an
// agent (separate processes). It
// reports the p99 delay of a chunk; the target is that every byte arrives, in
// order, and no stream goes silent for more than a second.
func Viewers(ctx context.Context, bins Bins, n int, dur time.Duration) Figure {
	name := fmt.Sprintf("%d viewers x 4 Mbit/s, p99 chunk delay", n)
	epoch := time.Now()
	paced := pacedSource(epoch, dur)
	src, err := framework.Serve("127.0.0.1:0", func(c *net.TCPConn) { paced(c) })
	if err != nil {
		return errorFigure(name, err)
	}
	defer src.Close()
	st, err := StartStack(ctx, StackConfig{Bins: bins, Target: src.Addr()})
	if err != nil {
		return errorFigure(name, err)
	}
	defer st.Close()
	direct := runViewers(ctx, src.Addr(), epoch, n, dur)
	through := runViewers(ctx, st.ViewerAddr, epoch, n, dur)
	f := Figure{
		Name: name, Value: millis(through.p99), Unit: "ms", Direct: millis(direct.p99),
		Ratio:  float64(through.p99) / float64(max(direct.p99, 1)),
		Target: "every byte, no stall > 1s",
		Pass:   through.bytes == through.expected && through.stalls == 0 && through.errs == 0,
		Note: fmt.Sprintf("%.0fs; max delay %.1f ms (direct %.1f); max gap %.0f ms; %d/%d MB; stalled %d; errors %d",
			dur.Seconds(), millis(through.max), millis(direct.max), millis(through.maxGap),
			through.bytes/1e6, through.expected/1e6, through.stalls, through.errs),
	}
	if through.firstErr != nil {
		f.Note += "; first error: " + through.firstErr.Error()
	}
	if direct.bytes != direct.expected || direct.errs != 0 {
		f.Note += fmt.Sprintf("; DIRECT BASELINE INCOMPLETE (%d/%d MB, %d errors)", direct.bytes/1e6, direct.expected/1e6, direct.errs)
	}
	return f
}
