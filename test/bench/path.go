package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// pingPong sends n 64-byte messages over one connection to addr, each after the
// previous echo arrived, and returns the round-trip times.
func pingPong(ctx context.Context, addr string, n int) ([]time.Duration, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bench: dial %s: %w", addr, err)
	}
	defer c.Close()
	return pingPongConn(ctx, c, n)
}

// pingPongConn is pingPong on a connection of the caller's.
func pingPongConn(ctx context.Context, c net.Conn, n int) ([]time.Duration, error) {
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	msg := make([]byte, 64)
	got := make([]byte, 64)
	warm := min(n/10+1, 200)
	rtts := make([]time.Duration, 0, n)
	for i := 0; i < warm+n; i++ {
		msg[0] = byte(i)
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return nil, fmt.Errorf("bench: ping: %w", err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			return nil, fmt.Errorf("bench: pong: %w", err)
		}
		if i >= warm {
			rtts = append(rtts, time.Since(start))
		}
		if got[0] != msg[0] {
			return nil, errors.New("bench: echo mismatch")
		}
	}
	return rtts, nil
}
