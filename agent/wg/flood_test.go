package wg

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.zx2c4.com/wireguard/device"
)

// initiation is a handshake initiation to the agent with a valid mac1 (anyone
// who knows the agent's public key can make one, and so can make the agent
// spend a Diffie-Hellman on it) and random contents otherwise.
func initiation(agentPub Key) []byte {
	msg := make([]byte, device.MessageInitiationSize)
	rand.Read(msg[4:116])
	binary.LittleEndian.PutUint32(msg, device.MessageInitiationType)
	key := blake2s.Sum256(append([]byte("mac1----"), agentPub[:]...))
	mac, _ := blake2s.New128(key[:])
	mac.Write(msg[:116])
	copy(msg[116:132], mac.Sum(nil))
	return msg
}

// TestHandshakeFlood: a flood of initiations from one address puts the agent
// under load, wireguard-go answers with cookie replies instead of working on
// them, and a real phone (from another address) still gets in meanwhile.
func TestHandshakeFlood(t *testing.T) {
	alice := mustKey(t)
	r := newAgentRig(t, []Peer{{Name: "a", PublicKey: alice.PublicKey(), AllowedIP: aliceIP, Viewer: "alice"}})
	flood, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("no 127.0.0.2 to flood from: %v", err)
	}
	defer flood.Close()
	to := net.UDPAddrFromAddrPort(r.direct())
	pkts := make([][]byte, 64)
	for i := range pkts {
		pkts[i] = initiation(r.priv.PublicKey())
	}

	var cookies, sent atomic.Int64
	ctx, stop := context.WithTimeout(context.Background(), failBound)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { // cookie replies come back to the flooder
		b := make([]byte, 2048)
		for {
			n, err := flood.Read(b)
			if err != nil {
				return
			}
			if n == device.MessageCookieReplySize && binary.LittleEndian.Uint32(b) == device.MessageCookieReplyType {
				cookies.Add(1)
			}
		}
	})
	wg.Go(func() { // bounded by ctx: stops when the test has its answer
		// Paced (64 a millisecond until the first cookie reply, then
		// floodBurst): unpaced, loopback
		// outruns the agent's socket buffer, and then the kernel drops
		// the phone's packets with the flood's before any code of ours
		// can tell them apart (a link's bandwidth paces a real flood).
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ctx.Err() == nil; {
			burst := floodBurst
			if cookies.Load() == 0 {
				burst = 64 // until the agent is under load
			}
			for range burst {
				if _, err := flood.WriteToUDP(pkts[i%len(pkts)], to); err == nil {
					sent.Add(1)
				}
				i++
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
	})

	// Under load first (the cookie replies say so), then the real phone.
	for cookies.Load() == 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("no cookie reply after %d initiations: the agent never went under load", sent.Load())
		case <-time.After(10 * time.Millisecond):
		}
	}
	p := newPhone(t, alice, aliceIP, r.priv, r.direct())
	start := time.Now()
	body, err := p.get(ctx, "/")
	if err != nil || body != "camera page" {
		t.Fatalf("phone during the flood: %q, %v (after %d initiations, %d cookie replies): %+v", body, err, sent.Load(), cookies.Load(), r.dev.Stats())
	}
	stop()
	flood.Close()
	t.Logf("flood: %d initiations sent, %d cookie replies, %d dropped by the source limit; the phone got in %v after the agent went under load",
		sent.Load(), cookies.Load(), r.dev.Stats().HandshakesDropped, time.Since(start).Round(time.Millisecond))
	_ = netip.Addr{}
}
