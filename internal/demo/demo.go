// Package demo runs the whole of Porthole on loopback for `make demo`: a relay, an
// agent and a simulated camera, wired as a user would (the agent reaches the relay
// over QUIC; viewers reach the camera through the relay), from an embedded default
// configuration.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/internal/camsim"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/relay"
)

// The demo's default public ports. The HTTP one must be a port browsers open
// (10080, say, is on their unsafe list and the page would not load).
const (
	DefaultHTTPPort = 10088
	DefaultRTSPPort = 10554
)

// Options are the demo's knobs; the zero value is the default demo.
type Options struct {
	// HTTPPort and RTSPPort are the public ports on the relay. Zero means
	// DefaultHTTPPort and DefaultRTSPPort.
	HTTPPort, RTSPPort uint16
	// Logger; nil discards.
	Logger *slog.Logger
}

// Run starts everything, prints the viewer URLs to w (one per line) and runs until
// ctx ends.
func Run(ctx context.Context, w io.Writer, opt Options) error {
	if opt.HTTPPort == 0 {
		opt.HTTPPort = DefaultHTTPPort
	}
	if opt.RTSPPort == 0 {
		opt.RTSPPort = DefaultRTSPPort
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "porthole-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	cam := camsim.New(camsim.Config{Name: "Porthole demo camera", Logger: opt.Logger.With("part", "camera")})
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	rtspLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		httpLn.Close()
		return err
	}

	token := config.NewToken()
	lo, hi := min(opt.HTTPPort, opt.RTSPPort), max(opt.HTTPPort, opt.RTSPPort)
	rs, err := relay.New(relay.Config{
		Relay: &config.Relay{
			Listen: "127.0.0.1:0", ViewerBind: "127.0.0.1", StateDir: dir + "/relay",
			Agents: map[string]config.RelayAgent{"home": {Token: token, Ports: config.PortRange{Lo: lo, Hi: hi}}},
		},
		Logger: opt.Logger.With("part", "relay"),
	})
	if err != nil {
		httpLn.Close()
		rtspLn.Close()
		return err
	}
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	ag, err := agent.New(agent.Config{
		Agent: &config.Agent{
			Name: "home", StateDir: dir + "/agent",
			Relay: &config.AgentRelay{Address: rs.Addr().String(), Token: token},
			Services: []config.Service{
				{Name: "camera-web", Target: httpLn.Addr().String(), Port: opt.HTTPPort, Allow: loopback},
				{Name: "camera-rtsp", Target: rtspLn.Addr().String(), Port: opt.RTSPPort, Allow: loopback},
			},
		},
		Logger: opt.Logger.With("part", "agent"),
	})
	if err != nil {
		httpLn.Close()
		rtspLn.Close()
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for _, f := range []func(context.Context) error{
		func(ctx context.Context) error { return cam.Run(ctx, httpLn, rtspLn) },
		rs.Run,
		ag.Run,
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errs <- err
				cancel()
			}
		}()
	}
	if err := waitServed(ctx, opt.HTTPPort); err == nil {
		fmt.Fprintf(w, "Porthole demo: relay on udp %s, agent connected, camera on the agent's LAN.\n", rs.Addr())
		fmt.Fprintln(w, "Open in a browser or VLC (through the relay):")
		fmt.Fprintf(w, "http://127.0.0.1:%d/\n", opt.HTTPPort)
		fmt.Fprintf(w, "rtsp://127.0.0.1:%d%s\n", opt.RTSPPort, camsim.RTSPPath)
		fmt.Fprintln(w, "Press Ctrl-C to stop.")
	}
	wg.Wait()
	cam.Close()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// waitServed waits until the relay answers on port, i.e. the agent registered.
func waitServed(ctx context.Context, port uint16) error {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
