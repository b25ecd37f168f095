package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// bulkSource writes size bytes to each connection, then closes it: a camera
// sending a recording as fast as the path allows.
func bulkSource(size int64) func(net.Conn) {
	return func(c net.Conn) {
		buf := make([]byte, 256<<10)
		for i := range buf {
			buf[i] = byte(i)
		}
		var sent int64
		for sent < size {
			n, err := c.Write(buf[:min(int64(len(buf)), size-sent)])
			sent += int64(n)
			if err != nil {
				return
			}
		}
	}
}

// download dials addr and reads to EOF, returning the byte count and the time taken.
func download(ctx context.Context, addr string) (int64, time.Duration, error) {
	var d net.Dialer
	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, 0, fmt.Errorf("bench: dial %s: %w", addr, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, err := c.Read(buf)
		n += int64(k)
		if errors.Is(err, io.EOF) {
			return n, time.Since(start), nil
		}
		if err != nil {
			return n, time.Since(start), fmt.Errorf("bench: download: %w", err)
		}
	}
}

func echo(c net.Conn) { io.Copy(c, c) }

// pingPong sends n 64-byte messages over one connection to addr, each after the
// previous echo arrived, and returns the round-trip times.
func pingPong(ctx context.Context, addr string, n int) ([]time.Duration, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bench: dial %s: %w", addr, err)
	}
	defer c.Close()
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
