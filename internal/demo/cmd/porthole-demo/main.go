// Command porthole-demo runs relay, agent and a simulated camera on loopback and
// prints the viewer URLs (`make demo`).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/porthole-dev/porthole/internal/demo"
)

func main() {
	httpPort := flag.Uint("http-port", demo.DefaultHTTPPort, "public port of the camera's web page on the relay")
	rtspPort := flag.Uint("rtsp-port", demo.DefaultRTSPPort, "public port of the camera's RTSP stream on the relay")
	portalPort := flag.Uint("portal-port", demo.DefaultPortalPort, "public port of the phone page on the relay")
	verbose := flag.Bool("v", false, "log what relay and agent do")
	flag.Parse()
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo.Run(ctx, os.Stdout, demo.Options{HTTPPort: uint16(*httpPort), RTSPPort: uint16(*rtspPort),
		PortalPort: uint16(*portalPort), Logger: log}); err != nil {
		fmt.Fprintln(os.Stderr, "porthole-demo:", err)
		os.Exit(1)
	}
}
