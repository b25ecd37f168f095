package tunnel

import (
	"context"
	"net"
	"time"

	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel/transport"
)

// ForwardTo is a StreamHandler that connects each viewer stream to the TCP
// target of its service (service name -> host:port) and copies both ways with
// half-close (gateway.Splice). Tests, benchmarks and tools use it; the agent puts its gateway
// (access rules, limits) in between instead.
func ForwardTo(targets map[string]string) StreamHandler {
	return func(ctx context.Context, hdr proto.StreamHeader, st transport.Stream) {
		target, ok := targets[hdr.Service]
		if !ok {
			st.Abort(uint64(proto.StreamRefused))
			return
		}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var d net.Dialer
		c, err := d.DialContext(dctx, "tcp", target)
		cancel()
		if err != nil {
			st.Abort(uint64(proto.StreamRefused))
			return
		}
		gateway.Splice(st, c.(*net.TCPConn))
	}
}
