package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ABSample is one measurement of one build in an A/B comparison.
type ABSample struct {
	Build     string  // the label of the build measured
	Figure    string  // e.g. "QUIC camera->viewer -P1", "QUIC RTT"
	Value     float64 // Gbit/s, or µs added for RTT (p50)
	P99       float64 // RTT only: µs added at p99
	CPUPerGB  float64 // relay+agent CPU s per GB moved (throughput only)
	RelayRSS  int64   // bytes, at the end of the measurement
	AgentRSS  int64
	DirectRaw float64 // the direct figure measured right before
	// Relay and Agent are system calls and sleeps per MB moved (throughput)
	// or per round trip (RTT).
	Relay, Agent string
}

// AB compares builds (label -> Bins) on the throughput (-P1, in the
// directions of reverses, true = camera->viewer) and latency figures, interleaving them: each round measures
// every build once per figure, in turn, so that a neighbour's load falls on
// all of them alike. Each sample is printed to w as it is taken.
func AB(ctx context.Context, labels []string, builds []Bins, transports []string, reverses []bool, rounds int, secs float64, pings int, w io.Writer) []ABSample {
	var out []ABSample
	emit := func(s ABSample) {
		out = append(out, s)
		defer fmt.Fprintf(w, "         relay %s; agent %s\n", s.Relay, s.Agent)
		if s.Figure[len(s.Figure)-3:] == "RTT" {
			fmt.Fprintf(w, "%-6s %-32s p50 %6.0f µs  p99 %6.0f µs  direct p50 %5.0f µs  RSS relay %5.1f MB agent %5.1f MB\n",
				s.Build, s.Figure, s.Value, s.P99, s.DirectRaw, float64(s.RelayRSS)/1e6, float64(s.AgentRSS)/1e6)
		} else {
			fmt.Fprintf(w, "%-6s %-32s %5.2f Gbit/s  CPU %5.2f s/GB  direct %5.1f  RSS relay %5.1f MB agent %5.1f MB\n",
				s.Build, s.Figure, s.Value, s.CPUPerGB, s.DirectRaw, float64(s.RelayRSS)/1e6, float64(s.AgentRSS)/1e6)
		}
	}
	srv, err := startIperfServer(ctx, builds[0].Iperf3)
	if err != nil {
		fmt.Fprintln(w, err)
		return nil
	}
	defer srv.close()
	echoP, echoAddr, err := startEchoProcess(ctx, builds[0])
	if err != nil {
		fmt.Fprintln(w, err)
		return nil
	}
	defer echoP.Kill()
	for r := 0; r < rounds; r++ {
		for _, tr := range transports {
			for _, rev := range reverses {
				fig := fmt.Sprintf("%s %s -P1", strings.ToUpper(tr), direction(rev))
				for i, b := range builds {
					if secs <= 0 {
						continue
					}
					s, err := abThroughput(ctx, b, srv, tr, secs, rev)
					if err != nil {
						fmt.Fprintf(w, "%s %s: %v\n", labels[i], fig, err)
						continue
					}
					s.Build, s.Figure = labels[i], fig
					emit(s)
				}
			}
			for i, b := range builds {
				if pings <= 0 {
					continue
				}
				s, err := abLatency(ctx, b, echoAddr, tr, pings)
				if err != nil {
					fmt.Fprintf(w, "%s %s RTT: %v\n", labels[i], tr, err)
					continue
				}
				s.Build, s.Figure = labels[i], strings.ToUpper(tr)+" RTT"
				emit(s)
			}
		}
	}
	return out
}

func abThroughput(ctx context.Context, b Bins, srv *iperfServer, tr string, secs float64, rev bool) (ABSample, error) {
	var s ABSample
	st, err := StartStack(ctx, StackConfig{Bins: b, Target: srv.addr, Transport: tr})
	if err != nil {
		return s, err
	}
	defer st.Close()
	direct, err := iperfRun(ctx, b.Iperf3, srv.addr, 1, 1, rev)
	if err != nil {
		return s, err
	}
	r0, a0, err := st.CPU()
	if err != nil {
		return s, err
	}
	rc0, ac0 := readCounters(st.Relay.Pid()), readCounters(st.Agent.Pid())
	through, err := iperfRun(ctx, b.Iperf3, st.ViewerAddr, secs, 1, rev)
	if err != nil {
		return s, err
	}
	r1, a1, err := st.CPU()
	if err != nil {
		return s, err
	}
	s.RelayRSS, s.AgentRSS = rssBytes(st)
	s.Value, s.DirectRaw = through.gbps, direct.gbps
	s.CPUPerGB = (r1 - r0 + a1 - a0).Seconds() / (float64(through.bytes) / 1e9)
	mb := float64(through.bytes) / 1e6
	s.Relay, s.Agent = readCounters(st.Relay.Pid()).sub(rc0).per(mb), readCounters(st.Agent.Pid()).sub(ac0).per(mb)
	return s, nil
}

func abLatency(ctx context.Context, b Bins, echoAddr, tr string, n int) (ABSample, error) {
	var s ABSample
	st, err := StartStack(ctx, StackConfig{Bins: b, Target: echoAddr, Transport: tr})
	if err != nil {
		return s, err
	}
	defer st.Close()
	var direct, through []time.Duration
	var rc, ac procCounters
	for range 2 {
		d, err := pingPong(ctx, echoAddr, n/2)
		if err != nil {
			return s, err
		}
		rc0, ac0 := readCounters(st.Relay.Pid()), readCounters(st.Agent.Pid())
		t, err := pingPong(ctx, st.ViewerAddr, n/2)
		rc1, ac1 := readCounters(st.Relay.Pid()).sub(rc0), readCounters(st.Agent.Pid()).sub(ac0)
		rc, ac = rc.add(rc1), ac.add(ac1)
		if err != nil {
			return s, err
		}
		direct, through = append(direct, d...), append(through, t...)
	}
	s.RelayRSS, s.AgentRSS = rssBytes(st)
	s.Relay, s.Agent = rc.per(float64(len(through))), ac.per(float64(len(through)))
	d50 := percentile(direct, 50)
	s.DirectRaw = micros(d50)
	s.Value = micros(percentile(through, 50) - d50)
	s.P99 = micros(percentile(through, 99) - percentile(direct, 99))
	return s, nil
}

// rssBytes is the relay's and the agent's RSS in bytes (0 when unreadable).
func rssBytes(st *Stack) (relay, agent int64) {
	r, _ := st.Relay.RSS()
	a, _ := st.Agent.RSS()
	return r << 10, a << 10 // VmRSS is in kB
}

// procCounters are a process's read and write system calls (/proc/PID/io
// syscr/syscw: read and write on TCP sockets and on the Go netpoller's eventfd,
// which counts wake-ups of a thread blocked in epoll; not QUIC's
// sendmsg/recvmmsg) and its threads' voluntary context switches (each one a
// sleep, and so a wake-up later).
type procCounters struct{ reads, writes, sleeps int64 }

func readCounters(pid int) procCounters {
	var c procCounters
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "syscr: "); ok {
				c.reads, _ = strconv.ParseInt(v, 10, 64)
			}
			if v, ok := strings.CutPrefix(line, "syscw: "); ok {
				c.writes, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				c.sleeps += n
			}
		}
	}
	return c
}

func (c procCounters) sub(d procCounters) procCounters {
	return procCounters{c.reads - d.reads, c.writes - d.writes, c.sleeps - d.sleeps}
}

func (c procCounters) add(d procCounters) procCounters {
	return procCounters{c.reads + d.reads, c.writes + d.writes, c.sleeps + d.sleeps}
}

// per is the counters divided by n (per MB or per round trip).
func (c procCounters) per(n float64) string {
	return fmt.Sprintf("%.1f reads %.1f writes %.1f sleeps", float64(c.reads)/n, float64(c.writes)/n, float64(c.sleeps)/n)
}
