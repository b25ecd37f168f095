package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// maxReply bounds what we read from the router (PCP caps messages at 1100 bytes).
const maxReply = 1100

// exchange sends req to the router at raddr and returns the first reply that
// accept takes, retransmitting with RFC 6886's schedule (250 ms, doubling)
// until ctx ends. Replies accept refuses (stray or for another request) are
// skipped. An ICMP "port unreachable" ends the exchange at once.
func exchange(ctx context.Context, raddr netip.AddrPort, req []byte, accept func([]byte) bool) ([]byte, error) {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(raddr))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", raddr, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()

	buf := make([]byte, maxReply+1)
	interval := 250 * time.Millisecond
	for {
		if _, err := conn.Write(req); err != nil {
			return nil, fmt.Errorf("send to %s: %w", raddr, err)
		}
		next := time.Now().Add(interval)
		if dl, ok := ctx.Deadline(); ok && dl.Before(next) {
			next = dl
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", raddr, ErrNoResponse)
		}
		conn.SetReadDeadline(next)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				if ctx.Err() != nil {
					return nil, fmt.Errorf("%s: %w", raddr, ErrNoResponse)
				}
				// Typically ECONNREFUSED: nothing listens on the router's port.
				return nil, fmt.Errorf("%s: %w: %w", raddr, ErrNoResponse, err)
			}
			if n > maxReply {
				continue
			}
			if accept(buf[:n]) {
				return append([]byte(nil), buf[:n]...), nil
			}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", raddr, ErrNoResponse)
		}
		interval *= 2
	}
}

// epochTracker notices a router restart from the seconds-since-start-of-epoch
// field that NAT-PMP and PCP put in every reply (RFC 6886 3.6, RFC 6887 8.5).
type epochTracker struct {
	have   bool
	epoch  uint32
	at     time.Time
	resets int // restarts seen but not yet taken
}

// observe records a reply's epoch received at now and reports whether the
// router lost its state since the previous reply.
func (e *epochTracker) observe(epoch uint32, now time.Time) bool {
	if !e.have {
		e.have, e.epoch, e.at = true, epoch, now
		return false
	}
	reset := false
	if epoch+1 < e.epoch {
		reset = true
	} else {
		client := now.Sub(e.at).Seconds()
		server := float64(epoch) - float64(e.epoch)
		if client+2 < server-server/16 || server+2 < client-client/16 {
			reset = true
		}
	}
	e.epoch, e.at = epoch, now
	if reset {
		e.resets++
	}
	return reset
}

// take reports whether a restart was seen since the last call.
func (e *epochTracker) take() bool {
	r := e.resets > 0
	e.resets = 0
	return r
}
