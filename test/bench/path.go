package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

// bulkSource writes size bytes to each connection, then closes it: a camera
// sending a recording as fast as the path allows.
func bulkSource(size int64) func(net.Conn) {
	return func(c net.Conn) {
		buf := make([]byte, 256<<10)
		for i := range buf {
			buf[i] = byte(i)
		}
		var sent int64
		for sent < size {
			n, err := c.Write(buf[:min(int64(len(buf)), size-sent)])
			sent += int64(n)
			if err != nil {
				return
			}
		}
	}
}

// download dials addr and reads to EOF, returning the byte count and the time taken.
func download(ctx context.Context, addr string) (int64, time.Duration, error) {
	var d net.Dialer
	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, 0, fmt.Errorf("bench: dial %s: %w", addr, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, err := c.Read(buf)
		n += int64(k)
		if errors.Is(err, io.EOF) {
			return n, time.Since(start), nil
		}
		if err != nil {
			return n, time.Since(start), fmt.Errorf("bench: download: %w", err)
		}
	}
}

// Throughput measures one viewer downloading size bytes from a loopback target,
// directly and through an in-process relay and agent.
func Throughput(ctx context.Context, size int64) Figure {
	const name = "bulk throughput, 1 viewer"
	src, err := serve(bulkSource(size))
	if err != nil {
		return errorFigure(name, err)
	}
	defer src.close()
	tun, err := StartTunnel(ctx, src.addr())
	if err != nil {
		return errorFigure(name, err)
	}
	defer tun.Close()
	gbps := func(addr string, want int64) (float64, error) {
		n, d, err := download(ctx, addr)
		if err == nil && n != want {
			err = fmt.Errorf("bench: got %d bytes, want %d", n, want)
		}
		return float64(n) * 8 / d.Seconds() / 1e9, err
	}
	// Three alternating runs per path, median of each: loopback figures on a
	// small machine vary by tens of percent from run to run.
	var directs, throughs []float64
	for range 3 {
		d, err := gbps(src.addr(), size)
		if err != nil {
			return errorFigure(name, err)
		}
		t, err := gbps(tun.ViewerAddr, size)
		if err != nil {
			return errorFigure(name, err)
		}
		directs, throughs = append(directs, d), append(throughs, t)
	}
	slices.Sort(directs)
	slices.Sort(throughs)
	direct, through := directs[1], throughs[1]
	const target = 2.0
	return Figure{
		Name: name, Value: through, Unit: "Gbit/s", Direct: direct, Ratio: through / direct,
		Target: fmt.Sprintf(">= %.0f Gbit/s", target), Pass: through >= target,
		Note: fmt.Sprintf("median of 3 x %d MiB camera->viewer (tunnel %.2f..%.2f); relay, agent and target share the CPUs", size>>20, throughs[0], throughs[2]),
	}
}

func echo(c net.Conn) { io.Copy(c, c) }

// pingPong sends n 64-byte messages over one connection to addr, each after the
// previous echo arrived, and returns the round-trip times.
func pingPong(ctx context.Context, addr string, n int) ([]time.Duration, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bench: dial %s: %w", addr, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	msg := make([]byte, 64)
	got := make([]byte, 64)
	warm := min(n/10+1, 200)
	rtts := make([]time.Duration, 0, n)
	for i := 0; i < warm+n; i++ {
		msg[0] = byte(i)
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return nil, fmt.Errorf("bench: ping: %w", err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			return nil, fmt.Errorf("bench: pong: %w", err)
		}
		if i >= warm {
			rtts = append(rtts, time.Since(start))
		}
		if got[0] != msg[0] {
			return nil, errors.New("bench: echo mismatch")
		}
	}
	return rtts, nil
}

// Latency measures 64-byte ping-pong round trips directly and through the tunnel
// and returns the added p50 and p99.
func Latency(ctx context.Context, n int) []Figure {
	names := []string{"added RTT p50, 64 B ping-pong", "added RTT p99, 64 B ping-pong"}
	fail := func(err error) []Figure { return []Figure{errorFigure(names[0], err), errorFigure(names[1], err)} }
	src, err := serve(echo)
	if err != nil {
		return fail(err)
	}
	defer src.close()
	tun, err := StartTunnel(ctx, src.addr())
	if err != nil {
		return fail(err)
	}
	defer tun.Close()
	direct, err := pingPong(ctx, src.addr(), n)
	if err != nil {
		return fail(err)
	}
	through, err := pingPong(ctx, tun.ViewerAddr, n)
	if err != nil {
		return fail(err)
	}
	var figs []Figure
	for i, p := range []float64{50, 99} {
		d, t := percentile(direct, p), percentile(through, p)
		f := Figure{
			Name: names[i], Value: micros(t - d), Unit: "µs", Direct: micros(d), Ratio: float64(t) / float64(d),
			Note: fmt.Sprintf("through %.0f µs vs direct RTT; %d samples", micros(t), n),
		}
		if p == 50 {
			f.Target, f.Pass = "< 150 µs added", t-d < 150*time.Microsecond
		}
		figs = append(figs, f)
	}
	return figs
}
