package quictransport_test

import (
	"testing"

	"github.com/porthole-dev/porthole/tunnel/transport/quictransport"
	"github.com/porthole-dev/porthole/tunnel/transport/transporttest"
)

// BenchmarkForward is one viewer connection through a relay and an agent in
// one process, the way the daemons forward it: camera TCP -> agent's Splice ->
// stream -> relay's Splice -> viewer TCP (transporttest.Forward).
// Run it with -cpu 1,2 to see what GOMAXPROCS costs.
// lost-%, the agent's packets declared lost, tells a congestion collapse from
// a slow CPU.
func BenchmarkForward(b *testing.B) {
	client, server := pair(b) // client: the agent; server: the relay
	qc := client.(*quictransport.Conn).QUIC()
	s0 := qc.ConnectionStats()
	transporttest.Forward(b, client, server)
	s1 := qc.ConnectionStats()
	if sent := s1.PacketsSent - s0.PacketsSent; sent > 0 {
		b.ReportMetric(100*float64(s1.PacketsLost-s0.PacketsLost)/float64(sent), "lost-%")
	}
}
