package rtspgw

import (
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/porthole-dev/porthole/internal/gateway/meter"
)

// TestMeterAndCap: an RTSP viewer's bytes count to them as they move; at the
// daily cap the stream ends and a new one gets 453 saying when video starts
// again; the audit log says why; another viewer goes on.
func TestMeterAndCap(t *testing.T) {
	cam := newFakeCam(t, camOptions{})
	m, err := meter.New(meter.Config{Caps: map[string]int64{"alice": 40_000}})
	if err != nil {
		t.Fatal(err)
	}
	g := start(t, Config{Meter: m}, cam.addr)
	bob, err := g.play(t, "/cam", "bob", "bob-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := g.play(t, "/cam", "alice", "alice-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	v.waitPackets(t, 5)
	waitFor(t, 20*time.Second, func() bool { u := m.Viewer("alice"); return u.BytesOut > 0 && u.BytesIn > 0 },
		func() string { return "alice's bytes counted" })
	if u := m.Viewer("alice"); len(u.Services) != 1 || u.Services[0].Service != "cam" {
		t.Errorf("alice's figures %+v", u)
	}
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(g.audit.String(), "reason=daily_cap") },
		func() string { return "live_end at the cap: " + g.audit.String() })
	_, err = g.play(t, "/cam", "alice", "alice-pw", nil)
	if statusOf(err) != base.StatusNotEnoughBandwidth || !strings.Contains(err.Error(), "starts again at") {
		t.Errorf("a new stream over the cap: %v, want 453 saying when it resets", err)
	}
	before := bob.packets.Load()
	bob.waitPackets(t, before+10)
}

// TestLiveTimeoutRTSP: a playing connection ends after LiveTimeout.
func TestLiveTimeoutRTSP(t *testing.T) {
	cam := newFakeCam(t, camOptions{})
	g := start(t, Config{LiveTimeout: 300 * time.Millisecond}, cam.addr)
	began := time.Now()
	v, err := g.play(t, "/cam", "alice", "alice-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	v.waitPackets(t, 1)
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(g.audit.String(), "reason=live_timeout") },
		func() string { return "live_end: " + g.audit.String() })
	if d := time.Since(began); d < 300*time.Millisecond {
		t.Errorf("ended after %v", d)
	}
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(g.audit.String(), "msg=close viewer=alice") },
		func() string { return "the conn closed: " + g.audit.String() })
}
