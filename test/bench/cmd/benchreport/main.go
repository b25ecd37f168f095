// Command benchreport measures Porthole's data path on loopback and prints one
// table: every figure beside a direct connection measured in the same run, its
// target and PASS/MISS. Run it from the module root:
//
//	go run ./test/bench/cmd/benchreport          # full run, about a minute
//	go run ./test/bench/cmd/benchreport -smoke   # small, seconds
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/porthole-dev/porthole/test/bench"
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
	if err := bench.Run(ctx, s, os.Stdout, progress); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
