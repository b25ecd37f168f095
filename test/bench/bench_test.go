package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	xs := []time.Duration{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 5}, {99, 10}, {100, 10}, {0, 1}, {10, 1}, {11, 2}} {
		if got := percentile(xs, c.p); got != c.want {
			t.Errorf("percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	WriteTable(&b, []Figure{
		{Name: "tp", Value: 2.5, Unit: "Gbit/s", Direct: 20, Ratio: 0.125, Target: ">= 2 Gbit/s", Pass: true},
		{Name: "mem", Value: 120, Unit: "KiB", Direct: NoBaseline, Ratio: NoBaseline, Target: "< 100 KiB"},
		{Name: "p99", Value: 60, Unit: "µs", Direct: 30, Ratio: 3},
	})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines:\n%s", len(lines), b.String())
	}
	for i, want := range [][]string{
		{"FIGURE", "VALUE", "DIRECT", "RATIO", "TARGET", "RESULT", "FRP"},
		{"tp", "2.50 Gbit/s", "20.0 Gbit/s", "0.12x", "PASS"},
		{"mem", "120 KiB", "FAIL"},
		{"p99", "60.0 µs", "30.0 µs", "3.00x"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d %q lacks %q", i, lines[i], w)
			}
		}
	}
	if strings.Contains(lines[3], "PASS") || strings.Contains(lines[3], "FAIL") {
		t.Errorf("figure without target judged: %q", lines[3])
	}
}

// TestWatchDetectsLoss feeds the viewer's checker a stream with a chunk missing.
func TestWatchDetectsLoss(t *testing.T) {
	epoch := time.Now()
	chunk := func(k int) []byte {
		b := make([]byte, chunkSize)
		binary.BigEndian.PutUint64(b[8:], uint64(k))
		for i := 16; i < len(b); i++ {
			b[i] = byte(k*7 + 1)
		}
		return b
	}
	for _, c := range []struct {
		name   string
		chunks []int
		bad    bool
	}{{"complete", []int{0, 1, 2}, false}, {"gap", []int{0, 2}, true}} {
		a, b := net.Pipe()
		go func() {
			for _, k := range c.chunks {
				a.Write(chunk(k))
			}
			a.Close()
		}()
		r := watch(b, epoch)
		if (r.err != nil) != c.bad || (!c.bad && r.bytes != int64(len(c.chunks))*chunkSize) {
			t.Errorf("%s: err %v, %d bytes", c.name, r.err, r.bytes)
		}
	}
}

// check fails the benchmark on errors, never on numbers; a skipped figure
// (no iperf3, not root) is logged loudly.
func check(b *testing.B, figs ...Figure) {
	b.Helper()
	for _, f := range figs {
		if f.Skipped {
			b.Logf("*** %s: %s", f.Name, f.Note)
			continue
		}
		if math.IsNaN(f.Value) {
			b.Fatalf("%s: %s", f.Name, f.Note)
		}
		b.Logf("%s: %.2f %s (direct %.2f) %s", f.Name, f.Value, f.Unit, f.Direct, f.Note)
	}
}

// bins are built once per test process.
var bins = sync.OnceValues(BuildBins)

func mustBins(b *testing.B) Bins {
	b.Helper()
	bs, err := bins()
	if err != nil {
		b.Fatal(err)
	}
	return bs
}

func BenchmarkIperf3(b *testing.B) {
	bs := mustBins(b)
	for range b.N {
		check(b, Throughput(context.Background(), bs, Smoke.IperfSeconds, Smoke.ThroughputRounds, Smoke.Parallels, Smoke.Reverses, Smoke.FRP)...)
	}
}

func BenchmarkLatency(b *testing.B) {
	bs := mustBins(b)
	for range b.N {
		figs := Latency(context.Background(), bs, Smoke.Pings, Smoke.LatencyRounds, Smoke.FRP)
		check(b, figs...)
		b.ReportMetric(figs[0].Value, "added-p50-µs")
	}
}

func BenchmarkViewers(b *testing.B) {
	bs := mustBins(b)
	for range b.N {
		f := Viewers(context.Background(), bs, Smoke.Viewers, Smoke.ViewerTime)
		check(b, f)
		b.ReportMetric(f.Value, "p99-ms")
	}
}

func BenchmarkRelayMemory(b *testing.B) {
	bs := mustBins(b)
	for range b.N {
		figs := MemoryPerAgent(context.Background(), bs, Smoke.Agents, Smoke.Settle)
		check(b, figs...)
		b.ReportMetric(figs[len(figs)-1].Value, "KiB/agent")
	}
}

func BenchmarkIdleViewers(b *testing.B) {
	bs := mustBins(b)
	for range b.N {
		figs := IdleViewers(context.Background(), bs, Smoke.IdleViewers, Smoke.Settle)
		check(b, figs...)
		b.ReportMetric(figs[len(figs)-1].Value, "MiB")
	}
}

func BenchmarkRelayRestart(b *testing.B) {
	bs := mustBins(b)
	for range b.N {
		figs := Restart(context.Background(), bs, Smoke.Restarts, Smoke.RestartJitter)
		check(b, figs...)
		b.ReportMetric(figs[0].Value, "s-to-answer")
	}
}

func BenchmarkAgentKilled(b *testing.B) {
	bs := mustBins(b)
	for range b.N {
		figs := AgentKilled(context.Background(), bs, Smoke.AgentKills, Smoke.AgentKillLimit)
		check(b, figs...)
		b.ReportMetric(figs[0].Value, "s-to-reset")
	}
}

func BenchmarkFloods(b *testing.B) {
	bs := mustBins(b)
	for range b.N {
		figs := Floods(context.Background(), bs, Smoke.Floods)
		check(b, figs...)
		for _, f := range figs {
			if !f.Pass {
				b.Errorf("%s: viewer not served throughout: %s", f.Name, f.Note)
			}
		}
	}
}

func BenchmarkWireGuard(b *testing.B) {
	bs := mustBins(b)
	for range b.N {
		figs := WireGuard(context.Background(), bs, Smoke.WireGuard)
		check(b, figs...)
		for _, f := range figs {
			if f.Unit == "Mbit/s" && !f.Skipped {
				path, dir := "direct", "down"
				if strings.Contains(f.Name, "relay") {
					path = "relay"
				}
				if strings.Contains(f.Name, "phone ->") {
					dir = "up"
				}
				if strings.Contains(f.Name, "real wireguard-go") {
					path = "real-" + path
				}
				b.ReportMetric(f.Value, "Mbit/s-"+path+"-"+dir)
			}
		}
	}
}

func TestMedianRuns(t *testing.T) {
	fig := func(name string, v float64, note string) Figure {
		return Figure{Name: name, Value: v, Note: note}
	}
	runs := [][]Figure{
		{fig("a", 1.3, "first"), fig("b", 9, ""), fig("c", 2, "")},
		{fig("a", 2.1, "second"), errorFigure("b", errors.New("boom")), fig("c", 1, "")},
		{fig("a", 1.6, "third"), fig("b", 7, "")},
	}
	got := medianRuns(runs)
	if len(got) != 3 || got[0].Name != "a" || got[1].Name != "b" || got[2].Name != "c" {
		t.Fatalf("names %v, want a, b, c in their order", got)
	}
	if got[0].Value != 1.6 || !strings.Contains(got[0].Note, "median of 3 runs (1.30, 2.10, 1.60)") || !strings.HasSuffix(got[0].Note, "third") {
		t.Errorf("a: %v %q, want the median run 1.6 with every run in its note", got[0].Value, got[0].Note)
	}
	// a failed round is the figure, not hidden by the others
	if !math.IsNaN(got[1].Value) || got[1].Target != "runs" || !strings.Contains(got[1].Note, "3 runs (9.00, error, 7.00)") || !strings.Contains(got[1].Note, "boom") {
		t.Errorf("b: %v %q %q, want the failed round with every run in its note", got[1].Value, got[1].Target, got[1].Note)
	}
	// of two values the lower is the median
	if got[2].Value != 1 {
		t.Errorf("c: %v, want 1", got[2].Value)
	}
	one := [][]Figure{{fig("a", 1, "only")}}
	if got := medianRuns(one); got[0].Note != "only" {
		t.Errorf("one round: note %q, want it unchanged", got[0].Note)
	}
}
