package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/porthole-dev/porthole/internal/camsim"
)

func TestRunNeedsSomethingToServe(t *testing.T) {
	if err := run(context.Background(), io.Discard, slog.New(slog.DiscardHandler), "", "", camsim.Config{}); err == nil {
		t.Error("run with no listeners succeeded")
	}
}

func TestRunPrintsURLsAndServes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, pw, slog.New(slog.DiscardHandler), "127.0.0.1:0", "127.0.0.1:0", camsim.Config{})
		pw.Close()
	}()

	lines := bufio.NewScanner(pr)
	var urls []string
	for len(urls) < 2 && lines.Scan() {
		urls = append(urls, lines.Text())
	}
	if len(urls) != 2 || !strings.HasPrefix(urls[0], "http://127.0.0.1:") || !strings.HasPrefix(urls[1], "rtsp://127.0.0.1:") ||
		!strings.HasSuffix(urls[1], camsim.RTSPPath) {
		t.Fatalf("printed %q", urls)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()

	resp, err := http.Get(urls[0] + "healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("run: %v", err)
	}
}
