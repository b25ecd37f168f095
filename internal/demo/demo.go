// Package demo runs the whole of Porthole on loopback for `make demo`: a relay, an
// agent and a simulated camera, wired as a user would (the agent reaches the relay
// over QUIC; viewers reach the camera through the relay). The camera's web page is
// an http service: HTTPS that ends at the agent (a self-signed certificate, since
// no CA can reach loopback), a demo viewer with a fresh random password, and a
// camera login (Digest) that only the agent knows. The camera's RTSP stream is an
// rtsp service: RTSPS that ends at the agent, the same demo viewer, one camera
// session however many players watch.
// The phone page (kind portal) shows the camera as a tile with live presets.
package demo

import (
	"context"
	"crypto/rand"
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
	"github.com/porthole-dev/porthole/agent/certs"
	"github.com/porthole-dev/porthole/agent/portmap"
	"github.com/porthole-dev/porthole/internal/camsim"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway/access"
	"github.com/porthole-dev/porthole/relay"
)

// The demo's default public ports. The HTTP one must be a port browsers open
// (10080, say, is on their unsafe list and the page would not load).
const (
	DefaultHTTPPort   = 10088
	DefaultRTSPPort   = 10554
	DefaultPortalPort = 10089
)

// Viewer is the name of the demo's viewer; its password is made at start.
const Viewer = "demo"

// RTSPService is the demo's rtsp service: players open
// rtsps://127.0.0.1:<RTSPPort>/camera.
const RTSPService = "camera"

// The camera's own login, which the agent uses and viewers never see. Its
// password is random too: nobody needs to type it.
const cameraUser = "admin"

// Options are the demo's knobs; the zero value is the default demo.
type Options struct {
	// HTTPPort, RTSPPort and PortalPort are the public ports on the relay.
	// Zero means DefaultHTTPPort, DefaultRTSPPort and DefaultPortalPort.
	HTTPPort, RTSPPort, PortalPort uint16
	// Logger; nil discards.
	Logger *slog.Logger
	// Direct, when set, also opens the agent's own gateway listeners (what a
	// router forwards to on the direct path), for tests that want both paths.
	Direct *Direct
}

// Direct is the agent's direct path in a demo: listeners on Listen at the same
// ports as the relay's, mapped on the router Portmap talks to.
type Direct struct {
	// Listen is a loopback address other than 127.0.0.1 (where the relay
	// listens on the same ports), such as 127.0.0.2. Required.
	Listen netip.Addr
	// Portmap is the router the agent maps its ports on; tests point it at
	// test/fakerouter. Portmap.Gateway is required: the demo never looks for
	// the machine's real router.
	Portmap portmap.Config
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
	if opt.PortalPort == 0 {
		opt.PortalPort = DefaultPortalPort
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "porthole-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	if d := opt.Direct; d != nil && (!d.Listen.IsLoopback() || d.Listen == netip.AddrFrom4([4]byte{127, 0, 0, 1}) || d.Portmap.Gateway == nil) {
		return errors.New("demo: Direct needs a loopback Listen other than 127.0.0.1 and a Portmap.Gateway")
	}
	// 16 base32 characters: 80 bits, typed once into a login form.
	password, camPassword := rand.Text()[:16], rand.Text()
	hash, err := access.HashPassword(password)
	if err != nil {
		return err
	}

	cam := camsim.New(camsim.Config{Name: "Porthole demo camera", Logger: opt.Logger.With("part", "camera"),
		Auth: "digest", Username: cameraUser, Password: camPassword})
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
	lo, hi := min(opt.HTTPPort, opt.RTSPPort, opt.PortalPort), max(opt.HTTPPort, opt.RTSPPort, opt.PortalPort)
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
	ac := &config.Agent{
		Name: "home", StateDir: dir + "/agent",
		Relay: &config.AgentRelay{Address: rs.Addr().String(), Token: token},
		Services: []config.Service{
			// Kind and TLS spelled out: the YAML parser defaults them, Go's zero values don't.
			{Name: "camera-web", Kind: config.KindHTTP, TLS: true, Target: httpLn.Addr().String(),
				Port: opt.HTTPPort, Allow: loopback, MJPEG: "/stream.mjpg", Snapshot: "/snapshot.jpg", LiveTimeout: config.DefaultLiveTimeout,
				CameraLogin: &config.CameraLogin{Username: cameraUser, Password: camPassword}},
			{Name: RTSPService, Kind: config.KindRTSP, TLS: true, Target: rtspLn.Addr().String(), Path: camsim.RTSPPath,
				Port: opt.RTSPPort, Allow: loopback},
			{Name: "phone", Kind: config.KindPortal, TLS: true, Port: opt.PortalPort, Allow: loopback},
		},
		Viewers: map[string]config.Viewer{Viewer: {PasswordHash: hash}},
	}
	acfg := agent.Config{Agent: ac, Logger: opt.Logger.With("part", "agent")}
	if d := opt.Direct; d != nil {
		ac.Direct = config.Direct{Enabled: true, Listen: d.Listen.String()}
		acfg.Portmap = d.Portmap
	}
	ag, err := agent.New(acfg)
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
	served := waitServed(ctx, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), opt.HTTPPort))
	if d := opt.Direct; d != nil && served == nil {
		served = waitServed(ctx, netip.AddrPortFrom(d.Listen, opt.HTTPPort))
	}
	if served == nil {
		fmt.Fprintf(w, "Porthole demo: relay on udp %s, agent connected, camera on the agent's LAN.\n", rs.Addr())
		fmt.Fprintln(w, "Open in a browser (through the relay; HTTPS ends at the agent):")
		fmt.Fprintf(w, "https://127.0.0.1:%d/\n", opt.HTTPPort)
		fmt.Fprintln(w, "and log in as:")
		fmt.Fprintf(w, "viewer: %s\n", Viewer)
		fmt.Fprintf(w, "password: %s\n", password)
		if c := ag.Status().Certificate; c != nil && c.Source == certs.SourceSelfSigned {
			fmt.Fprintln(w, "The certificate is self-signed (no CA can reach loopback), so the browser warns;")
			fmt.Fprintln(w, "accept it if its SHA-256 fingerprint is this one:")
			fmt.Fprintf(w, "fingerprint: %s\n", c.Fingerprint)
		}
		fmt.Fprintf(w, "The camera asks for its own login (digest, user %s): only the agent knows it.\n", cameraUser)
		fmt.Fprintln(w, "In VLC or an RTSP camera app (RTSP inside TLS, TCP transport; the same viewer and password):")
		fmt.Fprintf(w, "rtsps://127.0.0.1:%d/%s\n", opt.RTSPPort, RTSPService)
		fmt.Fprintln(w, "VLC asks for the login; ffplay and ffprobe take it in the URL, as viewer:password@ before the host.")
		if d := opt.Direct; d != nil {
			fmt.Fprintln(w, "The agent's own listeners (the direct path):")
			fmt.Fprintf(w, "https://%s/\n", netip.AddrPortFrom(d.Listen, opt.HTTPPort))
			fmt.Fprintf(w, "rtsps://%s/%s\n", netip.AddrPortFrom(d.Listen, opt.RTSPPort), RTSPService)
		}
		fmt.Fprintln(w, "On a phone, the camera page (every camera, low-data presets; same login):")
		fmt.Fprintf(w, "https://127.0.0.1:%d/\n", opt.PortalPort)
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

// waitServed waits until addr takes connections: on the relay, that is once
// the agent registered.
func waitServed(ctx context.Context, addr netip.AddrPort) error {
	for {
		c, err := net.Dial("tcp", addr.String())
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
