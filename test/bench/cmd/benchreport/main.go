// Command benchreport measures Porthole on loopback with the real binaries as
// separate processes and prints one table: every figure beside a direct
// connection measured in the same run, its target, PASS/FAIL and frp's figure
// from issue #7. Throughput needs iperf3; the UDP buffer figure needs root
// (it sets net.core.rmem_max/wmem_max for a while and restores them). Run it
// from the module root:
//
//	go run ./test/bench/cmd/benchreport          # full run, about 5 minutes
//	go run ./test/bench/cmd/benchreport -smoke   # small, about 30 s
//	go run ./test/bench/cmd/benchreport -only memory,idle-viewers
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"

	"github.com/porthole-dev/porthole/test/bench"
	"github.com/porthole-dev/porthole/test/framework"
)

func main() {
	smoke := flag.Bool("smoke", false, "run at smoke scale (numbers are not meaningful)")
	quiet := flag.Bool("q", false, "no progress lines on stderr")
	frp := flag.Bool("frp", true, "measure frp (test/bench/frp) beside Porthole in the throughput and latency steps; at smoke scale only with -frp explicitly")
	only := flag.String("only", "", "comma-separated steps to run ("+strings.Join(bench.Steps, ",")+"); empty runs all")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	s := bench.Full
	if *smoke {
		s = bench.Smoke
	}
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "frp" {
			s.FRP = *frp
		}
	})
	if *only != "" {
		s.Only = strings.Split(*only, ",")
		for _, o := range s.Only {
			if !slices.Contains(bench.Steps, o) {
				fmt.Fprintf(os.Stderr, "benchreport: unknown step %q (steps: %s)\n", o, strings.Join(bench.Steps, ","))
				os.Exit(2)
			}
		}
	}
	var progress io.Writer = os.Stderr
	if *quiet {
		progress = nil
	}
	err := bench.Run(ctx, s, os.Stdout, progress)
	framework.Default.Remove()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
