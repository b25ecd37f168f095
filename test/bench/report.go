// Package bench measures Porthole with the real binaries as separate
// processes on loopback (test/framework starts them): throughput of one viewer
// connection with iperf3 in both directions with the relay's and agent's CPU
// seconds per GB, added ping-pong latency, many paced camera viewers, relay
// memory per idle agent and with idle viewers at several GOGC settings, QUIC
// throughput at two UDP buffer limits, recovery when the relay or the
// agent is killed, and a viewer's round trips under the floods of issue #7
// (test/flood), issue #8's HTTPS path (https.go, loginstorm.go: MJPEG
// first frame and many logged-in viewers, HTTPS download, a login storm), and
// issue #9's RTSP proxy and data use (rtsp.go, with an H.264 camera in this
// process, rtspcam.go, and gortsplib viewers, rtspviewer.go: many viewers of
// one camera, a 1 Mbit/s viewer among fast ones; datacost.go: the bytes a
// phone moves at each preset of the phone page).
// Every figure is printed beside a direct baseline measured
// in the same run where one applies, with its target and frp's figures (frp
// measured in the same run, frp.go, and frp's figure from issue #7); nothing
// here asserts on numbers. `go run
// ./test/bench/cmd/benchreport` prints the full table; the Benchmark functions
// run the same code at smoke scale. To profile the data path, give the
// real binaries a profile (PORTHOLE_BENCH_BINS, cmd/benchab) or run
// transporttest.Forward.
package bench

import (
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Figure is one line of the report.
type Figure struct {
	// Name says what was measured.
	Name string
	// Value is the measured figure in Unit.
	Value float64
	// Unit of Value and Direct.
	Unit string
	// Direct is the same quantity over a direct connection; NaN when there is none.
	Direct float64
	// Ratio compares the tunnel with the direct path (through/direct); NaN when none.
	Ratio float64
	// Target is the goal in words, empty when there is none.
	Target string
	// Pass reports whether Target was met; ignored when Target is empty.
	Pass bool
	// Note adds detail (spread, sample count, what the direct figure is).
	Note string
	// Compare is the same figure of frp (this run's and the issue's), empty when none.
	Compare string
	// Skipped says the figure could not be measured here (a missing tool, not
	// root); it is neither PASS nor FAIL.
	Skipped bool
}

// NoBaseline is Direct and Ratio for figures without a direct counterpart.
var NoBaseline = math.NaN()

func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// WriteTable prints figures as an aligned table.
func WriteTable(w io.Writer, figs []Figure) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tVALUE\tDIRECT\tRATIO\tTARGET\tRESULT\tFRP\tNOTE")
	for _, f := range figs {
		result := "-"
		switch {
		case f.Skipped:
			result = "SKIPPED"
		case f.Target != "":
			result = "FAIL"
			if f.Pass {
				result = "PASS"
			}
		}
		ratio := "-"
		if !math.IsNaN(f.Ratio) {
			ratio = fmtNum(f.Ratio) + "x"
		}
		direct := fmtNum(f.Direct)
		if direct != "-" {
			direct += " " + f.Unit
		}
		target := f.Target
		if target == "" {
			target = "-"
		}
		compare := f.Compare
		if compare == "" {
			compare = "-"
		}
		value := fmtNum(f.Value) + " " + f.Unit
		if f.Skipped || math.IsNaN(f.Value) {
			value = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Name, value, direct, ratio, target, result, compare, f.Note)
	}
	return tw.Flush()
}

// percentile returns the p-th percentile (0..100) of xs by nearest rank; xs is sorted in place.
func percentile(xs []time.Duration, p float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	rank := int(math.Ceil(p/100*float64(len(xs)))) - 1
	return xs[min(max(rank, 0), len(xs)-1)]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// skipFigure is a figure that can't be measured here, saying why.
func skipFigure(name string, why error) Figure {
	return Figure{Name: name, Value: math.NaN(), Direct: NoBaseline, Ratio: NoBaseline, Skipped: true, Note: "SKIPPED: " + why.Error()}
}

func errorFigure(name string, err error) Figure {
	return Figure{Name: name, Value: math.NaN(), Direct: NoBaseline, Ratio: NoBaseline, Target: "runs", Note: "error: " + strings.ReplaceAll(err.Error(), "\n", " ")}
}

// loadAvg is /proc/loadavg's first three fields: other work on the machine
// moves every figure.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// errorFigures is errorFigure for each of a step's figures: the step failed
// before it measured any.
func errorFigures(names []string, err error) []Figure {
	var figs []Figure
	for _, n := range names {
		figs = append(figs, errorFigure(n, err))
	}
	return figs
}
