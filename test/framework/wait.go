package framework

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// PollInterval is how often Poll and Eventually test their condition.
const PollInterval = 20 * time.Millisecond

// Poll tests cond every PollInterval until it holds (true) or timeout has
// passed (false). cond is always tested at least once, and once more at the
// deadline.
func Poll(timeout time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return PollContext(ctx, PollInterval, cond) == nil
}

// PollContext tests cond every interval until it holds (nil) or ctx ends
// (ctx's error, after one last test).
func PollContext(ctx context.Context, interval time.Duration, cond func() bool) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			if cond() {
				return nil
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Eventually polls cond until it holds; after timeout it ends the test with
// the message.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	tb.Helper()
	if !Poll(timeout, cond) {
		tb.Fatalf("after %s: "+format, append([]any{timeout}, args...)...)
	}
}

// WaitOutput waits up to timeout for p's output to contain s, or ends the test.
func WaitOutput(tb testing.TB, p *Process, s string, timeout time.Duration) {
	tb.Helper()
	WaitOutputCount(tb, p, s, 1, timeout)
}

// WaitOutputCount waits up to timeout for p's output to contain s n times, or
// ends the test.
func WaitOutputCount(tb testing.TB, p *Process, s string, n int, timeout time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := p.WaitOutputCount(ctx, s, n); err != nil {
		tb.Fatalf("after %s: %v", timeout, err)
	}
}

// Addr is "127.0.0.1:port".
func Addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// EchoWorks reports whether a short round trip through addr (an echo service,
// directly or through the relay) succeeds now.
func EchoWorks(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	msg := []byte("ping " + addr)
	if _, err := c.Write(msg); err != nil {
		return false
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return false
	}
	return bytes.Equal(got, msg)
}

// WaitEcho waits until an echo round trip through addr works, or ends the test.
func WaitEcho(tb testing.TB, addr string, timeout time.Duration) {
	tb.Helper()
	Eventually(tb, timeout, func() bool { return EchoWorks(addr) }, "no echo through %s", addr)
}

// Refused reports whether a TCP connection to addr is refused now (nothing
// listens there).
func Refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return errors.Is(err, syscall.ECONNREFUSED)
	}
	c.Close()
	return false
}

// Sleep waits d or until ctx ends. It is for letting a measured process
// settle (benchmarks), never for waiting on a condition.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
