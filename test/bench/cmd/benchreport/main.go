// Command benchreport measures Porthole on loopback with the real binaries as
// separate processes and prints one table: every figure beside a direct
// connection measured in the same run, its target, PASS/FAIL and frp's figure
// from issue #7. Throughput needs iperf3; the UDP buffer figure needs root
// (it sets net.core.rmem_max/wmem_max for a while and restores them). Run it
// from the module root:
//
//	go run ./test/bench/cmd/benchreport          # full run, about 5 minutes
//	go run ./test/bench/cmd/benchreport -smoke   # small, about 30 s
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/porthole-dev/porthole/test/bench"
	"github.com/porthole-dev/porthole/test/framework"
)

func main() {
	smoke := flag.Bool("smoke", false, "run at smoke scale (numbers are not meaningful)")
	quiet := flag.Bool("q", false, "no progress lines on stderr")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	s := bench.Full
	if *smoke {
		s = bench.Smoke
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
