package framework

import (
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

var ports struct {
	mu   sync.Mutex // guards used
	used map[string]bool
}

// ErrNoPort means no free port was found.
var ErrNoPort = errors.New("no free port")

// FreePort returns a port on 127.0.0.1 that is free now for network ("tcp" or
// "udp") and was not handed out before in this process. Ports come from below
// the kernel's ephemeral range, so that a restarted program can bind its port
// again without an outgoing connection having taken it meanwhile.
func FreePort(network string) (int, error) {
	ports.mu.Lock()
	defer ports.mu.Unlock()
	if ports.used == nil {
		ports.used = map[string]bool{}
	}
	lo, hi := 20000, EphemeralLow()-1
	for range 1000 {
		p := lo + mrand.IntN(hi-lo+1)
		key := network + "/" + strconv.Itoa(p)
		if ports.used[key] || network == "both" && (ports.used["tcp/"+strconv.Itoa(p)] || ports.used["udp/"+strconv.Itoa(p)]) {
			continue // "both" also takes the number's tcp and udp ports
		}
		addr := "127.0.0.1:" + strconv.Itoa(p)
		switch network {
		case "tcp":
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				continue
			}
			ln.Close()
		case "udp":
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				continue
			}
			pc.Close()
		case "both":
			// the relay listens on UDP and TCP with the same number
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				continue
			}
			pc, err := net.ListenPacket("udp", addr)
			ln.Close()
			if err != nil {
				continue
			}
			pc.Close()
		default:
			return 0, fmt.Errorf("free port: network %q: want tcp, udp or both", network)
		}
		ports.used[key] = true
		if network == "both" {
			ports.used["tcp/"+strconv.Itoa(p)] = true
			ports.used["udp/"+strconv.Itoa(p)] = true
		}
		return p, nil
	}
	return 0, fmt.Errorf("free port in %d-%d: %w", lo, hi, ErrNoPort)
}

// Port is FreePort for tests: it ends the test on error.
func Port(tb testing.TB, network string) int {
	tb.Helper()
	p, err := FreePort(network)
	if err != nil {
		tb.Fatalf("framework: %v", err)
	}
	return p
}

// Ports returns n distinct free TCP ports and the range lo-hi covering them
// (for a relay agent's `ports:`).
func Ports(tb testing.TB, n int) (ps []int, lo, hi int) {
	tb.Helper()
	for range n {
		p := Port(tb, "tcp")
		ps = append(ps, p)
		if lo == 0 || p < lo {
			lo = p
		}
		hi = max(hi, p)
	}
	return ps, lo, hi
}

// EphemeralLow is the start of the kernel's ephemeral port range (32768 if
// unknown or implausibly low).
func EphemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 21000 {
				return n
			}
		}
	}
	return 32768
}
