package relay

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/test/framework"
)

// forwarderGoroutines counts goroutines running the UDP forwarder's code.
func forwarderGoroutines() int {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "relay.(*udpForwarder)") {
			n++
		}
	}
	return n
}

func testForwarder(lim udpLimits) *udpForwarder {
	s := &Server{cfg: Config{Relay: &config.Relay{ViewerBind: "127.0.0.1"}}}
	f := newUDPForwarder(s, nil, slog.New(slog.DiscardHandler))
	f.lim = lim
	return f
}

// TestUDPForwarderNoLeak: ports opened and closed many times, and forwarders
// closed, leave no goroutine and no socket behind.
func TestUDPForwarderNoLeak(t *testing.T) {
	anyPol, _ := gateway.ParsePolicy([]string{"any"})
	port := uint16(framework.Port(t, "udp"))
	for i := range 50 {
		f := testForwarder((&Config{}).udpLimits())
		svc := proto.Service{Name: "wireguard", Port: port, Proto: "udp", Allow: []string{"any"}}
		if errs := f.set(map[uint16]proto.Service{port: svc}, map[uint16]gateway.Policy{port: anyPol}); errs != nil {
			t.Fatalf("cycle %d: %v", i, errs)
		}
		if forwarderGoroutines() == 0 {
			t.Fatal("no forwarder goroutines while a port is open")
		}
		f.set(nil, nil) // the agent registers without the port
		f.close()
		f.close() // idempotent
	}
	for deadline := time.Now().Add(5 * time.Second); forwarderGoroutines() > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d forwarder goroutines left", forwarderGoroutines())
		}
		runtime.Gosched()
	}
	if pc, err := net.ListenPacket("udp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String()); err != nil {
		t.Fatalf("port still bound: %v", err)
	} else {
		pc.Close()
	}
}

// TestUDPFlowMemory: a full table of flows costs a bounded amount of memory.
func TestUDPFlowMemory(t *testing.T) {
	const flows = 1024
	f := testForwarder(udpLimits{idle: time.Hour, maxFlows: flows, newPerSec: 1e6, unansweredPPS: 1e6, answeredPPS: 1e6})
	defer f.close()
	sk := &udpSock{spec: proto.Service{Port: 51820}}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range flows {
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), uint16(1000+i))
		fl, why := f.flow(sk, 51820, from)
		if fl == nil {
			t.Fatalf("flow %d refused: %s", i, why)
		}
		f.fromAgentAnswered(fl)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(max(int64(after.HeapAlloc)-int64(before.HeapAlloc), 0)) / flows
	t.Logf("%.0f bytes per answered flow (%d flows)", per, flows)
	if per > 2048 {
		t.Errorf("%.0f bytes per flow, want under 2 KiB", per)
	}
	if _, why := f.flow(sk, 51820, netip.MustParseAddrPort("192.0.2.1:1")); why != udpDropFlowLimit {
		t.Errorf("flow beyond the cap: %q, want %q", why, udpDropFlowLimit)
	}
}
