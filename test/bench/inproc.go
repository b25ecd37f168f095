package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/relay"
	"github.com/porthole-dev/porthole/tunnel"
)

// Tunnel is an in-process relay and agent exposing one service on loopback, the
// way relay_test.go runs them: viewers dial ViewerAddr, the relay opens a QUIC
// stream to the agent, the agent dials the target.
type Tunnel struct {
	// ViewerAddr is the relay's service listener.
	ViewerAddr string
	stop       func()
}

// StartTunnel starts a relay and an agent whose one service leads to target.
func StartTunnel(ctx context.Context, target string) (*Tunnel, error) {
	port, err := freeTCPPort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "porthole-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: state dir: %w", err)
	}
	tok := config.NewToken()
	rc := &config.Relay{
		Listen: "127.0.0.1:0", ViewerBind: "127.0.0.1", StateDir: dir,
		Agents: map[string]config.RelayAgent{"home": {Token: tok, Ports: config.PortRange{Lo: port, Hi: port}}},
		Limits: config.Limits{MaxConnsPerSource: -1}, // every bench viewer comes from 127.0.0.1
	}
	srv, err := relay.New(relay.Config{Relay: rc})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: relay: %w", err)
	}
	rctx, stopRelay := context.WithCancel(context.Background())
	relayDone := make(chan struct{})
	go func() { srv.Run(rctx); close(relayDone) }()

	connected := make(chan tunnel.Session, 1)
	cl, err := tunnel.New(tunnel.Config{
		Address: srv.Addr().String(), Name: "home", Token: tok,
		Services: []tunnel.Service{{Name: "cam", Port: port, Allow: []string{"any"}}},
		Handler:  tunnel.ForwardTo(map[string]string{"cam": target}),
		OnConnect: func(s tunnel.Session) {
			select {
			case connected <- s:
			default:
			}
		},
	})
	if err != nil {
		stopRelay()
		<-relayDone
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: agent: %w", err)
	}
	actx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan struct{})
	go func() { cl.Run(actx); close(agentDone) }()
	t := &Tunnel{
		ViewerAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))),
		stop: func() {
			stopAgent()
			<-agentDone
			stopRelay()
			<-relayDone
			os.RemoveAll(dir)
		},
	}
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case s := <-connected:
		if len(s.Results) != 1 || !s.Results[0].Accepted {
			t.Close()
			return nil, fmt.Errorf("bench: service refused: %+v", s.Results)
		}
	case <-timer.C:
		t.Close()
		return nil, errors.New("bench: agent did not connect within 10s")
	case <-ctx.Done():
		t.Close()
		return nil, ctx.Err()
	}
	return t, nil
}

// Close stops the agent and the relay.
func (t *Tunnel) Close() { t.stop() }

func freeTCPPort() (uint16, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("bench: free port: %w", err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port), nil
}

func freeUDPPort() (uint16, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("bench: free port: %w", err)
	}
	defer pc.Close()
	return uint16(pc.LocalAddr().(*net.UDPAddr).Port), nil
}

// server is a loopback TCP server running handle for each connection.
type server struct {
	ln   net.Listener
	done chan struct{}
}

func serve(handle func(net.Conn)) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: target listener: %w", err)
	}
	s := &server{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	return s, nil
}

func (s *server) addr() string { return s.ln.Addr().String() }
func (s *server) close()       { s.ln.Close(); <-s.done }
