package demo

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/test/framework"
)

// ffprobeRTSPS plays u with ffprobe (FFmpeg's RTSP client: UDP first, TCP
// after the agent's 461) and returns what it printed: the first video
// stream's codec and size, and the frames it read.
func ffprobeRTSPS(t *testing.T, ffprobe, u string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, ffprobe, "-v", "error", "-select_streams", "v:0",
		"-count_frames", "-read_intervals", "%+#5", "-show_entries", "stream=codec_name,width,height,nb_read_frames",
		"-of", "default=nw=1", u).CombinedOutput()
	return string(out), err
}

// The rtsps:// URLs the demo prints play in ffprobe with the demo viewer's
// login, through the relay and at the agent's own listener, and not without
// it (make demo's promise).
func TestDemoRTSPS(t *testing.T) {
	ffprobe := framework.NeedTool(t, framework.EnvRTSP, "ffprobe", "apt-get install ffmpeg")
	p := startDemo(t, freePort(t), true)
	if p.RTSP == "" || p.RTSPDirect == "" {
		t.Fatalf("the demo printed no rtsps:// URLs for both paths:\n%s", strings.Join(p.lines, "\n"))
	}
	for _, u := range []string{p.RTSP, p.RTSPDirect} {
		out, err := ffprobeRTSPS(t, ffprobe, framework.WithLogin(u, p.Viewer, p.Password))
		if err != nil {
			t.Errorf("ffprobe %s: %v\n%s", u, err, out)
			continue
		}
		for _, want := range []string{"codec_name=mjpeg", "width=640", "height=360", "nb_read_frames=5"} {
			if !strings.Contains(out, want) {
				t.Errorf("ffprobe %s: no %s in\n%s", u, want, out)
			}
		}
	}
	out, err := ffprobeRTSPS(t, ffprobe, framework.WithLogin(p.RTSP, p.Viewer, p.Password+"x"))
	if err == nil || !strings.Contains(out, "401") {
		t.Errorf("ffprobe with a wrong password: %v, want a 401:\n%s", err, out)
	}
}
