package transporttest

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/tunnel/transport"
)

// Forward moves b.N MiB camera->viewer through one viewer connection the way
// the daemons forward it: camera TCP -> agent's gateway.Splice -> a stream of
// agent -> relay's gateway.Splice -> viewer TCP, all in this process, and
// reports CPU seconds per GiB of the whole process. Both transports'
// BenchmarkForward use it.
func Forward(b *testing.B, agent, relay transport.Conn) {
	const chunk = 1 << 20
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	camera := listenTCP(b)
	viewers := listenTCP(b)
	total := int64(b.N) * chunk
	go func() { // the camera: sends total bytes, then FIN
		c, err := camera.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		for left := total; left > 0; {
			n, err := c.Write(buf[:min(int64(len(buf)), left)])
			if err != nil {
				return
			}
			left -= int64(n)
		}
	}()
	go func() { // the agent: a stream in, a TCP connection to the camera out
		st, err := agent.AcceptStream(ctx)
		if err != nil {
			return
		}
		var hdr [1]byte
		if _, err := io.ReadFull(st, hdr[:]); err != nil {
			st.Close()
			return
		}
		lan, err := net.Dial("tcp", camera.Addr().String())
		if err != nil {
			st.Close()
			return
		}
		gateway.Splice(st, lan.(*net.TCPConn))
	}()
	go func() { // the relay: a viewer in, a stream to the agent out
		v, err := viewers.Accept()
		if err != nil {
			return
		}
		st, err := relay.OpenStream(ctx)
		if err != nil {
			v.Close()
			return
		}
		if _, err := st.Write([]byte{0}); err != nil { // the stream header
			v.Close()
			st.Close()
			return
		}
		gateway.Splice(v.(*net.TCPConn), st)
	}()
	b.SetBytes(chunk)
	cpu0 := cpuTime()
	b.ResetTimer()
	viewer, err := net.Dial("tcp", viewers.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer viewer.Close()
	viewer.(*net.TCPConn).CloseWrite()
	n, err := io.CopyBuffer(io.Discard, viewer, make([]byte, 128<<10))
	if err != nil || n != total {
		b.Fatalf("viewer got %d of %d bytes: %v", n, total, err)
	}
	b.StopTimer()
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(cpu.Seconds()/(float64(total)/(1<<30)), "cpu-s/GiB")
	}
}

func listenTCP(b *testing.B) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	return ln
}
