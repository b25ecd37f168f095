package httpgw

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/camsim"
)

func TestNoGoroutineLeak(t *testing.T) {
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	before := runtime.NumGoroutine()

	cam := camsim.New(camsim.Config{Width: 64, Height: 64, FPS: 30, Auth: "digest", Username: "admin", Password: "pw"})
	srv := httptest.NewServer(cam.Handler())
	g := start(t, Config{CameraLogin: &Credentials{Username: "admin", Password: "pw"}}, strings.TrimPrefix(srv.URL, "http://"))

	// A finished request, and a stream still running when everything closes.
	r := g.req(t, "GET", "/snapshot.jpg", "")
	r.SetBasicAuth("alice", "alice-pw")
	if resp, _ := g.do(t, r); resp.StatusCode != 200 {
		t.Fatalf("snapshot: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r = g.req(t, "GET", "/stream.mjpg", "").WithContext(ctx)
	r.SetBasicAuth("alice", "alice-pw")
	resp, err := g.client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	readParts(t, resp, 1)

	// Close alone ends the viewer's stream: the handler closes its connection.
	g.h.Close()
	io.Copy(io.Discard, resp.Body)
	if ctx.Err() != nil {
		t.Error("stream still open after Close")
	}
	resp.Body.Close()
	g.stop()
	srv.Close()
	cam.Close()

	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			var b bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Streams (one resized, one stuck on a camera that stalls) and a lingering
// fan-out all end at Close.
func TestMJPEGNoGoroutineLeak(t *testing.T) {
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	before := runtime.NumGoroutine()

	cam := camsim.New(camsim.Config{Width: 64, Height: 64, FPS: 30})
	srv := httptest.NewServer(cam.Handler())
	g := start(t, Config{MJPEGPath: "/stream.mjpg", SnapshotPath: "/snapshot.jpg", MJPEGLinger: time.Hour},
		strings.TrimPrefix(srv.URL, "http://"))
	r := g.req(t, "GET", SnapshotPath+"?width=32", "")
	r.SetBasicAuth("alice", "alice-pw")
	if resp, _ := g.do(t, r); resp.StatusCode != 200 {
		t.Fatalf("snapshot: %d", resp.StatusCode)
	}
	var resps []*http.Response
	for _, q := range []string{"?width=32", "?fps=5", ""} {
		resp := g.live(t, context.Background(), MJPEGPath+q)
		mjpegFrames(t, resp).next()
		resps = append(resps, resp)
	}
	resps[2].Body.Close() // one left: the fan-out lingers for it

	g.h.Close()
	for _, resp := range resps[:2] {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	g.stop()
	srv.Close()
	cam.Close()

	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			var b bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
