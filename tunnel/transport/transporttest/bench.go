package transporttest

import (
	"context"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/tunnel/transport"
)

// Throughput measures one stream carrying b.N chunks of 1 MiB from server to
// client (the relay opens viewer streams; video flows back on them the same
// way), written in 32 KiB writes as io.Copy does.
func Throughput(b *testing.B, client, server transport.Conn) {
	const chunk = 1 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s, err := server.OpenStream(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Write([]byte{0}); err != nil { // announce it (QUIC)
		b.Fatal(err)
	}
	r, err := client.AcceptStream(ctx)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		n, err := io.CopyBuffer(io.Discard, r, buf)
		if err == nil && n != int64(b.N)*chunk+1 {
			err = io.ErrUnexpectedEOF
		}
		done <- err
	}()
	buf := make([]byte, 32<<10)
	b.SetBytes(chunk)
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		for off := 0; off < chunk; off += len(buf) {
			if _, err := s.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := s.CloseWrite(); err != nil {
		b.Fatal(err)
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	// Other processes share the CPU: CPU time per byte says more than MB/s.
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(cpu.Seconds()/(float64(b.N)*chunk/(1<<30)), "cpu-s/GiB")
	}
	s.Close()
	r.Close()
}

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
