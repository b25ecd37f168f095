package quictransport

import (
	"net"
	"testing"
	"time"
)

// TestSteering: on a ListenUDP socket with its sibling, packets whose first
// byte is below 0x40 reach the sibling and all others the socket itself, from
// any source port (the kernel would otherwise spread sources across the
// reuseport group by hash).
func TestSteering(t *testing.T) {
	a, err := ListenUDP("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	sib := sibling(a)
	if sib == nil {
		t.Fatal("no sibling for a ListenUDP socket")
	}
	defer sib.Close()
	defer forget(a)
	const sources = 20
	for range sources {
		x, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"\x11bare", "\x3fbare", "\x51quic short header", "\xc3quic long header"} {
			if _, err := x.WriteTo([]byte(p), a.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
		x.Close()
	}
	// Loopback delivery is synchronous: everything sent is queued by now.
	count := func(c *net.UDPConn, bare bool) int {
		n := 0
		b := make([]byte, 64)
		for {
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			k, _, err := c.ReadFrom(b)
			if err != nil {
				return n
			}
			if (b[0] < 0x40) != bare {
				t.Errorf("%q reached the wrong socket", b[:k])
			}
			n++
		}
	}
	if n := count(sib, true); n != 2*sources {
		t.Errorf("sibling read %d bare packets, want %d", n, 2*sources)
	}
	if n := count(a, false); n != 2*sources {
		t.Errorf("the QUIC socket read %d packets, want %d", n, 2*sources)
	}
	if sibling(&net.UDPConn{}) != nil {
		t.Error("a socket ListenUDP did not make got a sibling")
	}
}
