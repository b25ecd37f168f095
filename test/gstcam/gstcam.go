// Package gstcam runs a real RTSP camera for tests: GStreamer's
// gst-rtsp-server (through python3-gi) serving a live test pattern as H.264
// from x264enc, on 127.0.0.1 at a free port, as a process of its own that
// the test kills by pid when it ends.
//
// It needs the Debian packages python3-gi, gir1.2-gst-rtsp-server-1.0,
// gstreamer1.0-plugins-base, -good and -ugly (x264enc). Without them Start
// skips the test loudly, or fails it when PORTHOLE_RTSP=require (.ci/run).
package gstcam

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/test/framework"
)

//go:embed gstcam.py
var script []byte

// Config is the camera's stream and login; zero fields take the defaults.
type Config struct {
	// Path is the main stream's path. Default "/live".
	Path string
	// SubPath, if set, serves a second stream at half the size (a camera's
	// sub-stream).
	SubPath string
	// Width, Height and FPS of the main stream. Default 320x240 at 15.
	Width, Height, FPS int
	// BitrateKbps is x264enc's target bitrate. Default 500.
	BitrateKbps int
	// User and Password, if set, are the camera's Basic login.
	User, Password string
}

// Camera is a running gst-rtsp-server.
type Camera struct {
	// Addr is host:port of its RTSP listener.
	Addr string
	// Path is the main stream's path.
	Path string
	proc *framework.Process
}

// python is Debian's python3, which has python3-gi, before whatever python3
// comes first in PATH (pyenv and the like have no gi).
func python() string {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	if p, err := exec.LookPath("python3"); err == nil {
		return p
	}
	return "python3"
}

// probe checks that GStreamer's RTSP server and x264enc load.
const probe = `import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
for e in ("videotestsrc", "x264enc", "rtph264pay"):
    assert Gst.ElementFactory.find(e), e + " is missing"
`

// Available reports why GStreamer's RTSP server cannot run here; nil when
// it can.
func Available() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, python(), "-c", probe).CombinedOutput(); err != nil {
		return fmt.Errorf("%s with GStreamer's RTSP server: %w: %s", python(), err, out)
	}
	return nil
}

const install = "apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly"

// Start starts a camera for tb and waits until it listens; it is killed
// when the test ends. Without GStreamer the test is skipped (or fails with
// PORTHOLE_RTSP=require).
func Start(tb testing.TB, cfg Config) *Camera {
	tb.Helper()
	if err := Available(); err != nil {
		if os.Getenv(framework.EnvRTSP) == "require" {
			tb.Fatalf("gstcam: %v (%s=require; %s)", err, framework.EnvRTSP, install)
		}
		tb.Skipf("SKIPPED: no GStreamer RTSP server (%s): %v", install, err)
	}
	if cfg.Path == "" {
		cfg.Path = "/live"
	}
	dir := tb.TempDir()
	py := filepath.Join(dir, "gstcam.py")
	if err := os.WriteFile(py, script, 0o600); err != nil {
		tb.Fatal(err)
	}
	port := framework.Port(tb, "tcp")
	args := []string{py, "--port", strconv.Itoa(port), "--path", cfg.Path}
	for _, o := range []struct {
		flag string
		v    int
	}{{"--width", cfg.Width}, {"--height", cfg.Height}, {"--fps", cfg.FPS}, {"--bitrate", cfg.BitrateKbps}} {
		if o.v > 0 {
			args = append(args, o.flag, strconv.Itoa(o.v))
		}
	}
	if cfg.SubPath != "" {
		args = append(args, "--sub-path", cfg.SubPath)
	}
	if cfg.User != "" {
		args = append(args, "--user", cfg.User, "--password", cfg.Password)
	}
	p := framework.StartT(tb, framework.Spec{Name: "gstcam", Path: python(), Args: args})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "listening "); err != nil {
		tb.Fatalf("gstcam did not start: %v\n%s", err, p.Output())
	}
	return &Camera{Addr: framework.Addr(port), Path: cfg.Path, proc: p}
}

// Connections is how many RTSP connections the camera has accepted.
func (c *Camera) Connections() int { return len(c.proc.Lines("client-connected")) }

// Open is how many RTSP connections are open now.
func (c *Camera) Open() int {
	return c.Connections() - len(c.proc.Lines("client-closed"))
}

// Stop ends the camera (a camera switched off); the test's cleanup would
// kill it anyway.
func (c *Camera) Stop() { c.proc.Kill() }
