package demo

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
)

func freePort(t *testing.T) uint16 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// startDemo runs the demo with its web page on httpPort until the test ends and
// returns the http:// URL it prints.
func startDemo(t *testing.T, httpPort uint16) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	opt := Options{HTTPPort: httpPort, RTSPPort: freePort(t)}
	go func() { done <- Run(ctx, pw, opt); pw.Close() }()
	t.Cleanup(func() { cancel(); <-done })
	var url string
	lines := bufio.NewScanner(pr)
	for lines.Scan() {
		if l := lines.Text(); strings.HasPrefix(l, "http://") {
			url = l
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if url == "" {
		t.Fatal("demo printed no http:// URL")
	}
	return url
}

// TestDemoServesCameraThroughRelay runs the demo and reads the printed URL's page
// and a frame of its MJPEG stream, which travel through the relay and the tunnel.
func TestDemoServesCameraThroughRelay(t *testing.T) {
	url := startDemo(t, freePort(t))
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "stream.mjpg") {
		t.Fatalf("page has no MJPEG stream: %s", page)
	}
	resp, err = client.Get(url + "stream.mjpg")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "multipart/x-mixed-replace") {
		t.Fatalf("stream content type %q", ct)
	}
	buf := make([]byte, 64<<10)
	n, _ := io.ReadAtLeast(resp.Body, buf, 4096)
	if !strings.Contains(string(buf[:n]), "\xff\xd8") {
		t.Fatalf("no JPEG frame in the first %d bytes of the stream", n)
	}
}

// The URL make demo prints must open in a browser: Chrome and Firefox refuse some
// ports outright (10080 was the demo's first choice and failed with ERR_UNSAFE_PORT).
func TestDefaultPortsOpenInBrowsers(t *testing.T) {
	if config.BrowserBlocked(DefaultHTTPPort) {
		t.Errorf("DefaultHTTPPort %d is on browsers' unsafe-port list", DefaultHTTPPort)
	}
	if !config.BrowserBlocked(10080) {
		t.Error("BrowserBlocked(10080) = false; the list is wrong")
	}
}
