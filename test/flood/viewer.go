package flood

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// DialFrom dials addr over TCP from the local IP from ("" = any). On Linux
// every 127/8 address is loopback, so "127.0.0.2" is a viewer with an address
// of its own: the relay's per-address caps don't lump it with a flood from
// 127.0.0.1.
func DialFrom(ctx context.Context, from, addr string) (net.Conn, error) {
	var d net.Dialer
	if from != "" {
		ip := net.ParseIP(from)
		if ip == nil {
			return nil, fmt.Errorf("flood: bad local address %q", from)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return d.DialContext(ctx, "tcp", addr)
}

// ViewerConfig configures WatchViewer.
type ViewerConfig struct {
	// From is the viewer's local IP; "" = any (127.0.0.1).
	From string
	// Addr is the relay's listener of an echo service. Required.
	Addr string
	// Every is the pause between round trips; zero means 10ms.
	Every time.Duration
	// FreshEvery: every this many round trips one goes over a new connection
	// (admission through the relay's listener), the others over one
	// long-lived connection (a video stream). Zero means 10.
	FreshEvery int
	// Timeout bounds one round trip, dial included: a hang guard, not a timing
	// bar. Zero means 20s.
	Timeout time.Duration
}

// Viewer does echo round trips through the relay until stopped, recording
// each one's time and every failure.
type Viewer struct {
	cfg    ViewerConfig
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex // guards the fields below
	rtts     []time.Duration
	fresh    int
	failures []string
}

// ViewerReport is what a Viewer saw.
type ViewerReport struct {
	// Rounds is the number of round trips tried.
	Rounds int
	// RTTs are the round-trip times over the long-lived connection.
	RTTs []time.Duration
	// Fresh is the number of round trips on new connections that succeeded.
	Fresh int
	// Failures describe every failed round trip (dial, write, read, wrong bytes).
	Failures []string
}

// Served reports whether every round trip succeeded, at least one on a fresh
// connection and one on the long-lived one.
func (r ViewerReport) Served() bool {
	return len(r.Failures) == 0 && r.Fresh > 0 && len(r.RTTs) > 0
}

func (r ViewerReport) String() string {
	s := fmt.Sprintf("%d round trips (%d on fresh connections), %d failed", r.Rounds, r.Fresh, len(r.Failures))
	if len(r.Failures) > 0 {
		s += "; first: " + r.Failures[0]
	}
	return s
}

// WatchViewer starts a viewer; Stop ends it.
func WatchViewer(ctx context.Context, cfg ViewerConfig) *Viewer {
	if cfg.Every == 0 {
		cfg.Every = 10 * time.Millisecond
	}
	if cfg.FreshEvery == 0 {
		cfg.FreshEvery = 10
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 20 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	v := &Viewer{cfg: cfg, cancel: cancel, done: make(chan struct{})}
	go v.run(ctx)
	return v
}

// Report is what the viewer saw so far; it keeps running.
func (v *Viewer) Report() ViewerReport {
	v.mu.Lock()
	defer v.mu.Unlock()
	return ViewerReport{Rounds: len(v.rtts) + v.fresh + len(v.failures), RTTs: append([]time.Duration(nil), v.rtts...),
		Fresh: v.fresh, Failures: append([]string(nil), v.failures...)}
}

// Reset forgets what the viewer saw so far (its connection stays).
func (v *Viewer) Reset() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rtts, v.fresh, v.failures = nil, 0, nil
}

// Stop ends the viewer and returns its report.
func (v *Viewer) Stop() ViewerReport {
	v.cancel()
	<-v.done
	return v.Report()
}

func (v *Viewer) fail(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.failures = append(v.failures, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
}

func (v *Viewer) run(ctx context.Context) {
	defer close(v.done)
	var long net.Conn
	defer func() {
		if long != nil {
			long.Close()
		}
	}()
	msg := make([]byte, 64)
	tick := time.NewTicker(v.cfg.Every)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		copy(msg, fmt.Sprintf("round %d from %s ", n, v.cfg.From))
		if n%v.cfg.FreshEvery == 0 {
			if err := v.freshRound(ctx, msg); err != nil && ctx.Err() == nil {
				v.fail("fresh connection: %v", err)
			} else if err == nil {
				v.mu.Lock()
				v.fresh++
				v.mu.Unlock()
			}
			continue
		}
		if long == nil {
			dctx, cancel := context.WithTimeout(ctx, v.cfg.Timeout)
			c, err := DialFrom(dctx, v.cfg.From, v.cfg.Addr)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					v.fail("dial the long-lived connection: %v", err)
				}
				continue
			}
			long = c
		}
		start := time.Now()
		if err := roundTrip(ctx, long, msg, v.cfg.Timeout); err != nil {
			if ctx.Err() == nil {
				v.fail("long-lived connection: %v", err)
			}
			long.Close()
			long = nil
			continue
		}
		rtt := time.Since(start)
		v.mu.Lock()
		v.rtts = append(v.rtts, rtt)
		v.mu.Unlock()
	}
}

func (v *Viewer) freshRound(ctx context.Context, msg []byte) error {
	dctx, cancel := context.WithTimeout(ctx, v.cfg.Timeout)
	defer cancel()
	c, err := DialFrom(dctx, v.cfg.From, v.cfg.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return roundTrip(ctx, c, msg, v.cfg.Timeout)
}

// roundTrip writes msg and reads it back; ctx's end interrupts it.
func roundTrip(ctx context.Context, c net.Conn, msg []byte, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo returned other bytes")
	}
	return nil
}
