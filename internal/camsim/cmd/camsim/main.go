// Command camsim runs a simulated IP camera: an HTML page, a JPEG snapshot and an MJPEG
// stream over HTTP, and MJPEG over RTSP at /stream1. It prints one URL per line once
// listening, for people and for the lab tests. With -auth basic|digest its HTTP interface
// asks for a login (user -user, password from $CAMSIM_PASSWORD) as real cameras do.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/porthole-dev/porthole/internal/camsim"
)

func main() {
	httpAddr := flag.String("http", "127.0.0.1:8080", "HTTP listen address (page, snapshot.jpg, stream.mjpg); empty disables")
	rtspAddr := flag.String("rtsp", "127.0.0.1:8554", "RTSP listen address (rtsp://ADDR/stream1, TCP transport); empty disables")
	name := flag.String("name", "Porthole camera", "camera name, shown in the page and the picture")
	fps := flag.Int("fps", 10, "frames per second")
	width := flag.Int("width", 640, "picture width in pixels (a multiple of 8, 64..2040)")
	height := flag.Int("height", 360, "picture height in pixels (a multiple of 8, 64..2040)")
	verbose := flag.Bool("v", false, "debug logging")
	auth := flag.String("auth", "", "HTTP login like a real camera's: basic or digest (default none)")
	user := flag.String("user", "admin", "the login's user name, with -auth")
	digestAlg := flag.String("digest-algorithm", "MD5", "the digest challenge's algorithm, with -auth digest: MD5 or SHA-256")
	flag.Parse()
	// The password comes from the environment, not a flag, so it stays out of ps.
	password := os.Getenv("CAMSIM_PASSWORD")
	switch *auth {
	case "", "basic", "digest":
	default:
		fmt.Fprintf(os.Stderr, "camsim: -auth %q: want basic or digest\n", *auth)
		os.Exit(2)
	}
	switch *digestAlg {
	case "MD5", "SHA-256":
	default:
		fmt.Fprintf(os.Stderr, "camsim: -digest-algorithm %q: want MD5 or SHA-256\n", *digestAlg)
		os.Exit(2)
	}

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, log, *httpAddr, *rtspAddr, camsim.Config{Name: *name, FPS: *fps, Width: *width, Height: *height, Logger: log,
		Auth: *auth, Username: *user, Password: password, DigestAlgorithm: *digestAlg}); err != nil {
		log.Error("camsim failed", "err", err)
		os.Exit(1)
	}
}

// run listens, prints the URLs to out, one per line, and serves until ctx ends.
func run(ctx context.Context, out io.Writer, log *slog.Logger, httpAddr, rtspAddr string, cfg camsim.Config) error {
	if httpAddr == "" && rtspAddr == "" {
		return fmt.Errorf("nothing to serve: both -http and -rtsp are empty")
	}
	var httpLn, rtspLn net.Listener
	var err error
	if httpAddr != "" {
		if httpLn, err = net.Listen("tcp", httpAddr); err != nil {
			return fmt.Errorf("listen http: %w", err)
		}
		fmt.Fprintf(out, "http://%s/\n", httpLn.Addr())
	}
	if rtspAddr != "" {
		if rtspLn, err = net.Listen("tcp", rtspAddr); err != nil {
			if httpLn != nil {
				_ = httpLn.Close()
			}
			return fmt.Errorf("listen rtsp: %w", err)
		}
		fmt.Fprintf(out, "rtsp://%s%s\n", rtspLn.Addr(), camsim.RTSPPath)
	}

	cam := camsim.New(cfg)
	defer cam.Close()
	err = cam.Run(ctx, httpLn, rtspLn)
	log.Info("camsim stopped")
	return err
}
