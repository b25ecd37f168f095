package e2e

import (
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/porthole-dev/porthole/test/framework"
)

var (
	syscallECONNREFUSED = syscall.ECONNREFUSED
	sigterm             = syscall.SIGTERM
	sigkill             = syscall.SIGKILL
)

// backend is a mock LAN service on 127.0.0.1 (framework.Backend).
type backend = framework.Backend

func startBackend(t testing.TB, handle func(*net.TCPConn)) *backend {
	t.Helper()
	return framework.StartBackend(t, handle)
}

// echoBackend echoes, honouring half-close.
func echoBackend(t testing.TB) *backend { return startBackend(t, framework.Echo) }

// readAllBackend reads until the viewer half-closes, then answers
// "<bytes> <sha256 hex>\n": it can only answer if the FIN came through.
func readAllBackend(t testing.TB) *backend { return startBackend(t, framework.ReadAll) }

// hangBackend accepts and never answers; connections end when the viewer side closes.
func hangBackend(t testing.TB) *backend { return startBackend(t, framework.Hang) }

// refusingAddr is an address on 127.0.0.1 where nothing listens.
func refusingAddr(t testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
}
