package rtspgw

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"
)

// rtsps: the gateway terminates TLS and the handler gets the *tls.Conn;
// viewers' logins and the stream travel inside it.
func TestOverTLS(t *testing.T) {
	// Borrow httptest's certificate and a TLS config that trusts it.
	ts := httptest.NewTLSServer(http.NotFoundHandler())
	certs, clientTLS := ts.TLS.Certificates, ts.Client().Transport.(*http.Transport).TLSClientConfig
	ts.Close()
	cam := newFakeCam(t, camOptions{})
	g := startTLS(t, Config{}, cam.addr, &tls.Config{Certificates: certs})

	tcp := gortsplib.TransportTCP
	c := &gortsplib.Client{Transport: &tcp, TLSConfig: clientTLS}
	v := &viewer{c: c, frames: make(chan uint32, 16)}
	u, err := base.ParseURL("rtsps://alice:alice-pw@" + g.addr + "/cam")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(u.Scheme, u.Host); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	c.OnPacketRTPAny(func(_ *description.Media, _ format.Format, _ *rtp.Packet) { v.packets.Add(1) })
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	v.waitPackets(t, 20)
	if st := g.l.Stats(); st.TLSFailed != 0 || st.BytesOut == 0 {
		t.Errorf("gateway stats: %+v", st)
	}

	// Plain RTSP on the TLS port goes nowhere.
	if _, err := g.play(t, "/cam", "alice", "alice-pw", nil); err == nil {
		t.Error("plain RTSP played on the TLS port")
	}

	ffprobe, err := exec.LookPath("ffprobe")
	if err != nil {
		t.Skip("SKIPPED: ffprobe is not installed (apt-get install ffmpeg); rtsps with a real player did not run")
	}
	aus, sps, pps := x264(t)
	cam = newFakeCam(t, camOptions{aus: aus, sps: sps, pps: pps})
	g = startTLS(t, Config{}, cam.addr, &tls.Config{Certificates: certs})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, ffprobe, "-v", "error", "-show_entries", "stream=codec_name,width,height",
		"-of", "default=nw=1", "rtsps://alice:alice-pw@"+g.addr+"/cam").Output()
	if err != nil || !strings.Contains(string(out), "codec_name=h264\nwidth=160\nheight=120") {
		t.Errorf("ffprobe over rtsps: %v\n%s", err, out)
	}
}
