// Command rttprobe starts the bench's relay, agent and echo backend (separate
// processes, as make bench runs them) and runs 64-byte ping-pongs, first
// straight to the echo backend and then through relay and agent. It prints
// the three pids first, so that the daemons can be traced while a known load
// runs (perf stat -p, perf record -g -p), and the p50 and p90 of each leg:
//
//	go run ./test/bench/cmd/rttprobe -transport quic -n 60000
//	PORTHOLE_BENCH_BINS=DIR go run ./test/bench/cmd/rttprobe   # another build, or a wrapper setting GOMAXPROCS
//
// -gap pauses between round trips (an idle machine between pings).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"time"

	"github.com/porthole-dev/porthole/test/bench"
	"github.com/porthole-dev/porthole/test/framework"
)

// startBackend runs the bench's echo backend, or iperf3 -s on a free port.
func startBackend(ctx context.Context, bins bench.Bins, mode string, args []string) (*framework.Process, string, error) {
	if mode != "iperf3" {
		return bench.StartBackend(ctx, bins, mode)
	}
	port, err := framework.FreePort("tcp")
	if err != nil {
		return nil, "", err
	}
	p, err := framework.Start(framework.Spec{Name: "iperf3", Path: "iperf3", Args: []string{"-s", "-B", "127.0.0.1", "-p", fmt.Sprint(port)}})
	if err != nil {
		return nil, "", err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.WaitListening(wctx, "tcp", port); err != nil {
		p.Kill()
		return nil, "", err
	}
	return p, framework.Addr(port), nil
}

func main() {
	tr := flag.String("transport", "quic", "")
	n := flag.Int("n", 20000, "round trips")
	gap := flag.Duration("gap", 0, "pause between round trips")
	wait := flag.Duration("wait", 0, "pause before starting")
	iperf := flag.Int("iperf", 0, "instead of ping-pongs, run iperf3 -R (camera->viewer) through relay and agent for this many seconds")
	flag.Parse()
	ctx := context.Background()
	bins, err := bench.BuildBins()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer framework.Default.Remove()
	mode, args := "echo", []string(nil)
	if *iperf > 0 {
		mode, args = "iperf3", []string{"-s"}
	}
	echo, echoAddr, err := startBackend(ctx, bins, mode, args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer echo.Kill()
	st, err := bench.StartStack(ctx, bench.StackConfig{Bins: bins, Target: echoAddr, Transport: *tr})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer st.Close()
	fmt.Printf("relay %d agent %d echo %d\n", st.Relay.Pid(), st.Agent.Pid(), echo.Pid())
	time.Sleep(*wait)
	if *iperf > 0 {
		_, port, _ := net.SplitHostPort(st.ViewerAddr)
		out, err := exec.CommandContext(ctx, "iperf3", "-c", "127.0.0.1", "-p", port, "-R", "-t", fmt.Sprint(*iperf)).CombinedOutput()
		fmt.Printf("%s", out)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	for _, addr := range []string{echoAddr, st.ViewerAddr} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		msg, got := make([]byte, 64), make([]byte, 64)
		var rtts []time.Duration
		for i := 0; i < *n; i++ {
			s := time.Now()
			if _, err := c.Write(msg); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			rtts = append(rtts, time.Since(s))
			if *gap > 0 {
				time.Sleep(*gap)
			}
		}
		c.Close()
		sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
		fmt.Printf("%s p50 %v p90 %v\n", addr, rtts[len(rtts)/2], rtts[len(rtts)*9/10])
	}
}
