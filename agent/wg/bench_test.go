package wg

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkThroughput measures TCP one way, phone to camera (a sink that reads
// to the FIN), through the tunnel on each leg: b.N chunks of 1 MiB a run. The
// phone is wireguard-go with the same userspace stack as the agent's, in this
// process, so phone, agent and sink share the CPUs (a real phone's kernel
// stack is elsewhere).
func BenchmarkThroughput(b *testing.B) {
	alice := mustKey(b)
	r := newAgentRig(b, []Peer{{Name: "a", PublicKey: alice.PublicKey(), AllowedIP: aliceIP, Viewer: "alice"}})
	for _, tc := range r.legs() {
		b.Run(tc.path, func(b *testing.B) {
			p := newPhone(b, alice, aliceIP, r.priv, tc.ep())
			defer p.dev.Close()
			// A first connection completes the handshake outside the timing.
			if err := sinkSend(p, 1); err != nil {
				b.Fatal(err)
			}
			const chunk = 1 << 20
			b.SetBytes(chunk)
			cpu0 := processCPU(b)
			b.ResetTimer()
			if err := sinkSend(p, int64(b.N)*chunk); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			// CPU per GB does not depend on what else runs on the machine.
			b.ReportMetric(float64(r.dev.Stats().RelayDropped), "relay-dropped")
			b.ReportMetric((processCPU(b)-cpu0).Seconds()/(float64(b.N)*chunk/1e9), "cpu-s/GB")
		})
	}
}

// processCPU is the CPU time the process has used (user and system).
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sinkSend sends n bytes to the sink service and checks its count.
func sinkSend(p *phone, n int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := p.tnet.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(tunnelNet.Addr(), portSink))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	buf := make([]byte, 64<<10)
	if _, err := io.CopyBuffer(c, io.LimitReader(zeros{}, n), buf); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if err := c.CloseWrite(); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("sink's answer: %w", err)
	}
	if got, _, _ := strings.Cut(line, " "); got != fmt.Sprint(n) {
		return fmt.Errorf("sink read %s bytes, want %d", got, n)
	}
	return nil
}
