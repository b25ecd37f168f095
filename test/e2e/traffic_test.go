package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// setupOne starts a relay and one agent "home" with the given services (ports
// allocated here, in the agent's range) and waits for the tunnel.
func setupOne(t *testing.T, targets ...string) (e *env, relay, agent *Process, ps []int) {
	t.Helper()
	ps, lo, hi := servicePorts(t, len(targets))
	tok := strongToken()
	e = newEnv(t, agentEntry{Name: "home", Token: tok, Lo: lo, Hi: hi})
	relay = e.startRelay()
	var svcs []service
	for i, tg := range targets {
		svcs = append(svcs, service{Name: fmt.Sprintf("svc%d", i), Target: tg, Port: ps[i]})
	}
	agent = e.startAgent("agent", e.agentConfig("agent.yaml", "home", tok, svcs...))
	agent.WaitLog("tunnel up", 10*time.Second)
	return e, relay, agent, ps
}

// TestBytes: 8 MiB of random data each way through relay -> agent -> echo, for several
// concurrent viewers, arrive identical.
func TestBytes(t *testing.T) {
	t.Parallel()
	echo := echoBackend(t)
	_, _, _, ps := setupOne(t, echo.Addr())
	waitEcho(t, ps[0], 10*time.Second)

	const size = 8 << 20
	const viewers = 3
	var wg sync.WaitGroup
	errs := make(chan error, viewers)
	for i := range viewers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- transfer(t, ps[0], size, i)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func transfer(t *testing.T, port, size, id int) error {
	data := make([]byte, size)
	rand.Read(data)
	c := dialViewer(t, port)
	c.SetDeadline(time.Now().Add(60 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("viewer %d: read after %d bytes: %w", id, len(got), err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("viewer %d: write: %w", id, err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("viewer %d: got %d bytes back (sha %x), sent %d (sha %x)", id, len(got), sha256.Sum256(got), len(data), sha256.Sum256(data))
	}
	return nil
}

// TestHalfClose: the viewer writes, half-closes, and still reads the answer of a
// backend that answers only after it has seen the end of the viewer's data.
func TestHalfClose(t *testing.T) {
	t.Parallel()
	ra := readAllBackend(t)
	_, _, _, ps := setupOne(t, ra.Addr())
	data := make([]byte, 1<<20+123)
	rand.Read(data)
	sum := sha256.Sum256(data)
	want := fmt.Sprintf("%d %s\n", len(data), hex.EncodeToString(sum[:]))
	eventually(t, 10*time.Second, func() bool { return !portClosed(ps[0]) }, "service port %d not open", ps[0])

	c := dialViewer(t, ps[0])
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read after half-close: %v (got %q)", err, got)
	}
	if string(got) != want {
		t.Fatalf("answer %q, want %q", got, want)
	}
}

// TestAllowRule: a service allowing only 192.0.2.0/24 closes a viewer from 127.0.0.1
// without a byte; a service allowing 127.0.0.1/32 works.
func TestAllowRule(t *testing.T) {
	t.Parallel()
	echo := echoBackend(t)
	ps, lo, hi := servicePorts(t, 2)
	tok := strongToken()
	e := newEnv(t, agentEntry{Name: "home", Token: tok, Lo: lo, Hi: hi})
	relay := e.startRelay()
	agent := e.startAgent("agent", e.agentConfig("agent.yaml", "home", tok,
		service{Name: "office", Target: echo.Addr(), Port: ps[0], Allow: "[192.0.2.0/24]"},
		service{Name: "lan", Target: echo.Addr(), Port: ps[1], Allow: "[127.0.0.1/32]"},
	))
	agent.WaitLog("tunnel up", 10*time.Second)
	waitEcho(t, ps[1], 10*time.Second)

	// The relay resets the connection at once: the dial itself may see the reset.
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", ps[0]), 3*time.Second)
	if err == nil {
		defer c.Close()
		c.Write([]byte("let me in"))
		if nothing, err := readsNothing(c, 3*time.Second); !nothing {
			t.Fatalf("viewer outside the allow rule got bytes or a hang (err %v)", err)
		}
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("viewer outside the allow rule: dial: %v", err)
	}
	relay.WaitLog("viewer refused by the service's allow rule", 5*time.Second)
	if l := relay.Lines("viewer refused by the service's allow rule"); !strings.Contains(l[0], "home/office") || !strings.Contains(l[0], "127.0.0.1") {
		t.Errorf("refusal line does not name the service and viewer: %s", l[0])
	}
	if !echoWorks(ps[1]) {
		t.Error("allowed service stopped working")
	}
}

// TestViewerWhileAgentOffline: the service port is closed while the agent is away,
// and works once it connects.
func TestViewerWhileAgentOffline(t *testing.T) {
	t.Parallel()
	echo := echoBackend(t)
	ps, lo, hi := servicePorts(t, 1)
	tok := strongToken()
	e := newEnv(t, agentEntry{Name: "home", Token: tok, Lo: lo, Hi: hi})
	e.startRelay()
	if !portClosed(ps[0]) {
		t.Fatal("service port open before the agent connected")
	}
	agent := e.startAgent("agent", e.agentConfig("agent.yaml", "home", tok, service{Name: "cam", Target: echo.Addr(), Port: ps[0]}))
	waitEcho(t, ps[0], 10*time.Second)
	// And closed again after the agent leaves cleanly.
	agent.Signal(sigterm)
	if code := agent.Wait(10 * time.Second); code != 0 {
		t.Errorf("agent exit code %d after SIGTERM", code)
	}
	eventually(t, 5*time.Second, func() bool { return portClosed(ps[0]) }, "service port still open after the agent left")
}
