package wg

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// lossyLink joins two stacks as WireGuard would, each way a pump from one's
// Read to the other's Write; drop says, for each packet from a to b, whether
// the link loses it.
func lossyLink(t *testing.T, a, b *Netstack, drop, dropBack func(pkt []byte) bool) {
	var wg sync.WaitGroup
	pump := func(from, to *Netstack, drop func([]byte) bool) {
		defer wg.Done()
		bufs := make([][]byte, tunBatch)
		for i := range bufs {
			bufs[i] = make([]byte, MTU+100)
		}
		sizes := make([]int, tunBatch)
		for {
			n, err := from.Read(bufs, sizes, 0)
			if err != nil {
				return
			}
			out := make([][]byte, 0, n)
			for i := range n {
				if drop == nil || !drop(bufs[i][:sizes[i]]) {
					out = append(out, bufs[i][:sizes[i]])
				}
			}
			to.Write(out, 0)
		}
	}
	wg.Add(2)
	go pump(a, b, drop)
	go pump(b, a, dropBack)
	t.Cleanup(func() { a.Close(); b.Close(); wg.Wait() })
}

// stackAgentIP is the agent's address in the stack tests.
var stackAgentIP = netip.MustParseAddr("10.77.0.1")

// linkedStacks makes an agent's and a phone's stack joined by lossyLink.
func linkedStacks(t *testing.T, drop, dropBack func(pkt []byte) bool) (agent, phone *Netstack) {
	t.Helper()
	agent, err := NewNetstack([]netip.Addr{stackAgentIP}, MTU)
	if err != nil {
		t.Fatal(err)
	}
	phone, err = NewNetstack([]netip.Addr{aliceIP}, MTU)
	if err != nil {
		agent.Close()
		t.Fatal(err)
	}
	lossyLink(t, agent, phone, drop, dropBack)
	return agent, phone
}

// TestStackRecoversFromBurstLoss: the bench's camera -> phone transfers
// through WireGuard sometimes fell from hundreds of Mbit/s to 1-5 for
// seconds. Captures showed why: the phone's UDP buffer overflowed twice in
// one flight, losing about ten segments (a hole), then, after a stretch that
// arrived and was SACKed, the rest of the flight (the tail). gVisor's sender
// then repaired it two segments per retransmission timeout (200 ms each):
// with RACK it counts the lost tail as still in flight (nothing above it was
// SACKed), so the window stays full. Here the link loses a hole, passes a
// stretch, then loses the new segments of the next 30 ms (retransmissions
// pass); the transfer must then finish without a string of timeouts (one
// is expected: nothing after the tail tells the sender it was lost).
func TestStackRecoversFromBurstLoss(t *testing.T) {
	const first, hole, stretch, tailFor = 400, 11, 100, 30 * time.Millisecond
	var (
		mu               sync.Mutex
		seen, lost, tail int
		highest          uint32 // the end of the highest data segment seen
		tailFrom         time.Time
	)
	agent, phone := linkedStacks(t, func(pkt []byte) bool {
		ip := header.IPv4(pkt)
		if ip.TransportProtocol() != header.TCPProtocolNumber {
			return false
		}
		tcp := header.TCP(ip.Payload())
		n := len(tcp.Payload())
		if n == 0 {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		seen++
		seq, end := tcp.SequenceNumber(), tcp.SequenceNumber()+uint32(n)
		retransmit := highest != 0 && int32(seq-highest) < 0
		if int32(end-highest) > 0 || highest == 0 {
			highest = end
		}
		drop := false
		switch {
		case seen <= first:
		case seen <= first+hole:
			drop = true
		case seen <= first+hole+stretch:
			tailFrom = time.Now()
		case !retransmit && time.Since(tailFrom) < tailFor:
			drop = true // the tail: new data sent while the hole is repaired
			tail++
		}
		if drop {
			lost++
		}
		return drop
	}, nil)
	ln, err := agent.ListenTCPAddrPort(netip.AddrPortFrom(stackAgentIP, 9000))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 4 << 20
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.CopyN(c, zeros{}, size)
	}()
	ctx := ctxFor(t, failBound)
	c, err := phone.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(stackAgentIP, 9000))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(failBound))
	start := time.Now()
	n, err := io.CopyN(io.Discard, c, size)
	el := time.Since(start)
	st := agent.Stats()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d of %d MiB in %v, %d data segments lost on the link; agent: %+v", n>>20, size>>20, el.Round(time.Millisecond), lost, st)
	if err != nil {
		t.Fatalf("%d of %d bytes: %v", n, size, err)
	}
	if tail == 0 {
		t.Fatal("the link lost no tail: the test did not test")
	}
	if st.TCPTimeouts > 3 {
		t.Errorf("%d segments lost in two bursts took %d retransmission timeouts to repair (%d segments retransmitted)", lost, st.TCPTimeouts, st.TCPRetransmits)
	}
}

// TestStackCoalescedDataIntact: what Write coalesces (GRO over WireGuard's
// batches) arrives byte for byte, both ways, beside a second connection.
func TestStackCoalescedDataIntact(t *testing.T) {
	agent, phone := linkedStacks(t, nil, nil)
	ln, err := agent.ListenTCPAddrPort(netip.AddrPortFrom(stackAgentIP, 9000))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }() // echo
		}
	}()
	const size = 4 << 20
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{1}).Read(data)
	ctx := ctxFor(t, failBound)
	var wg sync.WaitGroup
	for i := range 2 {
		c, err := phone.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(stackAgentIP, 9000))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(failBound))
		wg.Add(1)
		go func() {
			defer wg.Done()
			wrote := make(chan error, 1)
			go func() { _, err := c.Write(data); wrote <- err }()
			got := make([]byte, size)
			if _, err := io.ReadFull(c, got); err != nil {
				t.Errorf("connection %d: %v", i, err)
				return
			}
			if err := <-wrote; err != nil {
				t.Errorf("connection %d: write: %v", i, err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("connection %d: the echo differs from what was sent", i)
			}
		}()
	}
	wg.Wait()
	t.Logf("the agent's stack took %d IP packets for the phone's %d TCP segments (GRO)",
		agent.stack.Stats().IP.PacketsReceived.Value(), phone.Stats().TCPSegmentsSent)
}
