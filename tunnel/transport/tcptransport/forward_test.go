package tcptransport_test

import (
	"testing"

	"github.com/porthole-dev/porthole/tunnel/transport/transporttest"
)

// BenchmarkForward is one viewer connection through a relay and an agent in
// one process, the way the daemons forward it: camera TCP -> agent's Splice ->
// stream -> relay's Splice -> viewer TCP (transporttest.Forward).
// Run it with -cpu 1,2 to see what GOMAXPROCS costs; the QUIC package has the same.
func BenchmarkForward(b *testing.B) {
	client, server := pair(b) // client: the agent; server: the relay
	transporttest.Forward(b, client, server)
}
