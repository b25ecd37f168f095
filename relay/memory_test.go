package relay_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/relay"
	"github.com/porthole-dev/porthole/tunnel"
)

// idleAgentsEnv hands the agents' specs to the helper process
// (TestIdleAgentsHelper): "relayaddr name:token:port name:token:port ...".
const idleAgentsEnv = "PORTHOLE_TEST_IDLE_AGENTS"

// idleAgents is how many agents TestIdleAgentMemory connects: enough that the
// relay's fixed costs vanish in the per-agent figure, few enough for -race.
const idleAgents = 40

// memSnapshot is the relay process's memory that grows with its sessions.
type memSnapshot struct {
	heap, stack uint64 // HeapInuse, StackInuse after a full GC
	goroutines  int
}

func snapshot() memSnapshot {
	// Twice: the first cycle's finalizers (sockets, timers) free more in the second.
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSnapshot{heap: ms.HeapInuse, stack: ms.StackInuse, goroutines: runtime.NumGoroutine()}
}

// TestIdleAgentMemory bounds what an idle agent costs the relay: live heap,
// goroutine stacks and goroutines per session (each agent with one registered
// service). The agents run in a child process so that only the relay's side is
// counted. make bench measures the same thing as RSS of the real binaries (200
// agents, target < 100 KiB); this is the cheap guard against regressions.
// PORTHOLE_TEST_MEMPROFILE=dir writes heap and goroutine profiles there.
func TestIdleAgentMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process with many agents")
	}
	if os.Getenv("PORTHOLE_TEST_MEMPROFILE") != "" {
		runtime.MemProfileRate = 1
	}
	agents := map[string]config.RelayAgent{}
	var specs []string
	for i := range idleAgents {
		name, tok, port := fmt.Sprintf("idle%03d", i), config.NewToken(), freePort(t)
		agents[name] = config.RelayAgent{Token: tok, Ports: config.PortRange{Lo: port, Hi: port}}
		specs = append(specs, fmt.Sprintf("%s:%s:%d", name, tok, port))
	}
	rc := &config.Relay{Listen: "127.0.0.1:0", ViewerBind: "127.0.0.1", StateDir: t.TempDir(), Agents: agents}
	srv, err := relay.New(relay.Config{Relay: rc, Logger: logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	var pre runtime.MemStats
	runtime.ReadMemStats(&pre)
	before := snapshot()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleAgentsHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), idleAgentsEnv+"="+srv.Addr().String()+" "+strings.Join(specs, " "))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	// The helper prints "ready" once every agent's registration was answered.
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- nil
				io.Copy(io.Discard, stdout)
				return
			}
		}
		ready <- fmt.Errorf("helper ended before its agents were ready: %v", sc.Err())
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("agents not ready within 60s")
	}
	if n := len(srv.Sessions()); n != idleAgents {
		t.Fatalf("%d sessions at the relay, want %d", n, idleAgents)
	}
	var post runtime.MemStats
	runtime.ReadMemStats(&post)
	// Goroutines of the handshakes and of earlier tests wind down for a while
	// after the last registration: wait (bounded) for the count to settle, so
	// only goroutines that stay are counted. A per-agent leak never settles.
	limit := before.goroutines + maxGoroutinesPerAgent*idleAgents + 2
	after := snapshot()
	for deadline := time.Now().Add(10 * time.Second); after.goroutines > limit && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		after = snapshot()
	}
	// On a starved CPU (the whole suite in parallel) heartbeats and the last
	// handshakes' packets still sit in buffers for a moment: an idle agent's
	// cost is what stays, so take the least of a few readings a second apart.
	// A per-agent leak stays in every one of them.
	for range 3 {
		time.Sleep(time.Second)
		if s := snapshot(); s.heap+s.stack < after.heap+after.stack && s.goroutines <= limit {
			after = s
		}
	}
	t.Logf("before any GC: %.1f KiB stacks, %.1f KiB heap in use per agent", float64(int64(post.StackInuse)-int64(pre.StackInuse))/idleAgents/1024, float64(int64(post.HeapInuse)-int64(pre.HeapInuse))/idleAgents/1024)
	if dir := os.Getenv("PORTHOLE_TEST_MEMPROFILE"); dir != "" {
		for _, p := range []string{"heap", "goroutine"} {
			f, err := os.Create(filepath.Join(dir, p+".pprof"))
			if err != nil {
				t.Fatal(err)
			}
			pprof.Lookup(p).WriteTo(f, 0)
			f.Close()
		}
		f, _ := os.Create(filepath.Join(dir, "goroutines.txt"))
		pprof.Lookup("goroutine").WriteTo(f, 1)
		f.Close()
	}
	heap := float64(int64(after.heap)-int64(before.heap)) / idleAgents / 1024
	stack := float64(int64(after.stack)-int64(before.stack)) / idleAgents / 1024
	gs := float64(after.goroutines-before.goroutines) / idleAgents
	t.Logf("per idle agent: %.1f KiB heap in use, %.1f KiB stacks, %.2f goroutines", heap, stack, gs)
	if heap+stack > maxKiBPerAgent {
		t.Errorf("an idle agent costs the relay %.1f KiB of heap and stacks, want < %d", heap+stack, maxKiBPerAgent)
	}
	// A few goroutines of the relay's own may come and go meanwhile (the GC
	// hook's cleanup, a listener's accept loop): hence the 2.
	if n := after.goroutines - before.goroutines; n > maxGoroutinesPerAgent*idleAgents+2 {
		t.Errorf("an idle agent costs the relay %.2f goroutines, want <= %d", gs, maxGoroutinesPerAgent)
	}
}

// TestIdleAgentsHelper is the child process of TestIdleAgentMemory: it runs
// the agents named in idleAgentsEnv until its stdin closes.
func TestIdleAgentsHelper(t *testing.T) {
	spec := os.Getenv(idleAgentsEnv)
	if spec == "" {
		t.Skip("helper process of TestIdleAgentMemory")
	}
	fields := strings.Fields(spec)
	addr, agents := fields[0], fields[1:]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	connected := make(chan struct{}, len(agents))
	done := make(chan struct{}, len(agents))
	for _, a := range agents {
		parts := strings.Split(a, ":")
		port, _ := strconv.Atoi(parts[2])
		var once bool
		c, err := tunnel.New(tunnel.Config{
			Address: addr, Name: parts[0], Token: parts[1], Transport: tunnel.TransportQUIC,
			Services: []tunnel.Service{{Name: "cam", Port: uint16(port), Allow: []string{"any"}}},
			Handler:  tunnel.ForwardTo(map[string]string{"cam": "127.0.0.1:9"}),
			OnConnect: func(s tunnel.Session) {
				for _, r := range s.Results {
					if !r.Accepted {
						fmt.Fprintln(os.Stderr, "service refused:", r.Reason)
					}
				}
				if !once {
					once = true
					connected <- struct{}{}
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		go func() { c.Run(ctx); done <- struct{}{} }()
	}
	for range agents {
		<-connected
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	cancel()
	for range agents {
		<-done
	}
}
