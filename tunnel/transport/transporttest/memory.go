package transporttest

import (
	"runtime"
	"testing"

	"github.com/porthole-dev/porthole/tunnel/transport"
)

// IdleMemory reports the heap and stack bytes one idle connection holds, both
// ends together, averaged over n connections made by connect (which should
// dial one shared listener, as agents dial one relay).
func IdleMemory(t testing.TB, n int, connect func() (client, server transport.Conn)) (perPair uint64) {
	used := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	before := used()
	conns := make([]transport.Conn, 0, 2*n)
	for range n {
		c, s := connect()
		conns = append(conns, c, s)
	}
	after := used()
	for _, c := range conns {
		c.CloseWithError(0, "")
	}
	if after < before {
		return 0
	}
	return (after - before) / uint64(n)
}
