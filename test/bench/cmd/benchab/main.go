// Command benchab compares builds of porthole-relay and porthole-agent on the
// throughput (iperf3 -P1, both directions) and latency figures of the bench,
// interleaved round by round so that load from elsewhere on the machine falls
// on every build alike. Each build is a directory holding porthole-relay and
// porthole-agent (go build -o DIR/ ./relay/cmd/porthole-relay ./agent/cmd/porthole-agent):
//
//	go run ./test/bench/cmd/benchab -rounds 3 old=/tmp/a new=/tmp/b
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"

	"github.com/porthole-dev/porthole/test/bench"
	"github.com/porthole-dev/porthole/test/framework"
)

func main() {
	rounds := flag.Int("rounds", 3, "rounds; each measures every build once per figure")
	secs := flag.Float64("t", 5, "iperf3 seconds per run (0: no throughput)")
	pings := flag.Int("pings", 10000, "round trips per latency sample (0: no latency)")
	trs := flag.String("transports", "quic,tcp", "transports to measure")
	dirs := flag.String("dirs", "cv,vc", "throughput directions: cv (camera->viewer, iperf3 -R), vc")
	flag.Parse()
	var reverses []bool
	for _, d := range strings.Split(*dirs, ",") {
		reverses = append(reverses, d == "cv")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	base, err := bench.BuildBins()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if base.Iperf3 == "" {
		base.Iperf3, _ = exec.LookPath("iperf3")
	}
	var labels []string
	var builds []bench.Bins
	for _, a := range flag.Args() {
		label, dir, ok := strings.Cut(a, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "benchab: want label=dir, got %q\n", a)
			os.Exit(2)
		}
		b := base
		b.Relay, b.Agent = filepath.Join(dir, "porthole-relay"), filepath.Join(dir, "porthole-agent")
		labels, builds = append(labels, label), append(builds, b)
	}
	samples := bench.AB(ctx, labels, builds, strings.Split(*trs, ","), reverses, *rounds, *secs, *pings, os.Stdout)
	framework.Default.Remove()
	// medians per build and figure
	type key struct{ fig, build string }
	vals := map[key][]bench.ABSample{}
	var keys []key
	for _, s := range samples {
		k := key{s.Figure, s.Build}
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = append(vals[k], s)
	}
	sort.SliceStable(keys, func(i, j int) bool { return keys[i].fig < keys[j].fig })
	fmt.Println("\nmedians:")
	for _, k := range keys {
		ss := vals[k]
		med := func(f func(bench.ABSample) float64) float64 {
			xs := make([]float64, len(ss))
			for i, s := range ss {
				xs[i] = f(s)
			}
			sort.Float64s(xs)
			return xs[len(xs)/2]
		}
		fmt.Printf("%-32s %-6s value %7.2f  p99/CPU %6.2f  relayRSS %5.1f MB agentRSS %5.1f MB (n=%d)\n", k.fig, k.build,
			med(func(s bench.ABSample) float64 { return s.Value }),
			med(func(s bench.ABSample) float64 {
				if strings.HasSuffix(s.Figure, "RTT") {
					return s.P99
				}
				return s.CPUPerGB
			}),
			med(func(s bench.ABSample) float64 { return float64(s.RelayRSS) / 1e6 }),
			med(func(s bench.ABSample) float64 { return float64(s.AgentRSS) / 1e6 }), len(ss))
	}
}
