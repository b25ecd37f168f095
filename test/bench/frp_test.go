package bench

import (
	"math"
	"strings"
	"testing"
)

// TestThroughputTargetsFollowFRP: with frp measured in the run, Porthole's
// one-stream figure is judged against 1.3x frp's QUIC (1x frp's default over
// TCP) of the same direction, and the issue's fixed figure is still named.
func TestThroughputTargetsFollowFRP(t *testing.T) {
	ours := func(v float64) []Figure {
		tgt, txt := throughputTarget("quic")
		return []Figure{
			{Name: "throughput QUIC camera->viewer -P1", Value: v, Target: txt, Pass: v >= tgt},
			{Name: "throughput QUIC camera->viewer -P4", Value: 9},
		}
	}
	frp := []Figure{
		{Name: "throughput frp QUIC viewer->camera -P1", Value: 2},
		{Name: "throughput frp QUIC camera->viewer -P1", Value: 1.1},
	}
	for _, c := range []struct {
		v        float64
		pass     bool
		issueMet string
	}{{1.5, true, "1.62: not met"}, {1.4, false, "1.62: not met"}, {1.7, true, "1.62: met"}} {
		figs := ours(c.v)
		setThroughputTargets(figs, frp, "quic")
		f := figs[0]
		if f.Pass != c.pass || !strings.Contains(f.Target, ">= 1.43 Gbit/s") || !strings.Contains(f.Target, c.issueMet) || !strings.Contains(f.Compare, "1.10 here") {
			t.Errorf("%.2f Gbit/s: pass %v, target %q, compare %q", c.v, f.Pass, f.Target, f.Compare)
		}
		if figs[1].Target != "" {
			t.Errorf("-P4 got a target: %q", figs[1].Target)
		}
	}
	// without frp's figure (or with a failed one) the issue's stays
	for _, theirs := range [][]Figure{nil, {{Name: "throughput frp QUIC camera->viewer -P1", Value: math.NaN()}}} {
		figs := ours(1.5)
		setThroughputTargets(figs, theirs, "quic")
		if figs[0].Pass || !strings.Contains(figs[0].Target, "1.62") {
			t.Errorf("without frp: pass %v, target %q", figs[0].Pass, figs[0].Target)
		}
	}
	tcp := []Figure{{Name: "throughput TCP viewer->camera -P1", Value: 2.5, Target: "x"}}
	setThroughputTargets(tcp, []Figure{{Name: "throughput frp default (TCP+TLS+yamux) viewer->camera -P1", Value: 2.6}}, "tcp")
	if tcp[0].Pass || !strings.Contains(tcp[0].Target, ">= 2.60") {
		t.Errorf("tcp: pass %v, target %q", tcp[0].Pass, tcp[0].Target)
	}
}
