package relay_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/tunnel"
)

// TestSilentAgentDropped: an agent that stops pinging while its transport stays
// up (hung, or its QUIC keep-alives still flowing) loses its session within 5s:
// the relay closes its listeners, so new viewers are refused, and resets the
// viewers still connected (a clean end of stream would look like the camera
// finished). Before, the relay kept everything until the transport's 30s idle
// timeout, which the agent's keep-alives never let expire.
func TestSilentAgentDropped(t *testing.T) {
	tok := config.NewToken()
	port := freePort(t)
	e := startRelay(t, port, tok)
	connected := make(chan struct{}, 4)
	c, err := tunnel.New(tunnel.Config{
		Address: e.relay.Addr().String(), Name: "home", Token: tok, Logger: logger(t),
		Services:  []tunnel.Service{{Name: "cam", Port: port, Allow: []string{"any"}}},
		Handler:   tunnel.ForwardTo(map[string]string{"cam": echoServer(t)}),
		OnConnect: func(tunnel.Session) { connected <- struct{}{} },
		// One session only: a reconnect would open the listeners again.
		BackoffMin: time.Hour, BackoffMax: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not connect")
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	v, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	v.Write([]byte("ping"))
	buf := make([]byte, 4)
	v.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(v, buf); err != nil {
		t.Fatalf("viewer before: %v", err)
	}

	c.PauseHeartbeat(true)
	start := time.Now()
	v.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = v.Read(buf)
	took := time.Since(start)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("running viewer got %v after %s, want a reset", err, took.Round(time.Millisecond))
	}
	if took > 5*time.Second {
		t.Fatalf("running viewer reset after %s, want within 5s", took)
	}
	for {
		nv, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		nv.Close()
		if time.Since(start) > 5*time.Second {
			t.Fatalf("service port still accepting %s after the agent went silent", time.Since(start))
		}
		time.Sleep(50 * time.Millisecond) // poll interval, not waiting for a condition to happen by itself
	}
	t.Logf("silent agent: viewer reset after %s, port closed after %s", took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
