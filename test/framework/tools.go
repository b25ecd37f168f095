package framework

import (
	"net/url"
	"os"
	"os/exec"
	"testing"
)

// EnvRTSP is the environment variable that makes the RTSP tests' tools
// (ffprobe, ffmpeg, GStreamer's RTSP server) mandatory: .ci/run sets
// PORTHOLE_RTSP=require, so that CI fails where a laptop without them skips.
const EnvRTSP = "PORTHOLE_RTSP"

// NeedTool returns the path of the program name. When it is missing the test
// is skipped, loudly, or fails when the environment variable env is
// "require"; install says how to get it (e.g. "apt-get install ffmpeg").
func NeedTool(t testing.TB, env, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv(env) == "require" {
		t.Fatalf("%s is not installed and %s=require (%s)", name, env, install)
	}
	t.Skipf("SKIPPED: %s is not installed (%s); set %s=require to make this a failure", name, install, env)
	return ""
}

// WithLogin is the URL u with name:pass@ before the host, as players such
// as ffprobe take a login (rtsps://alice:pw@host:port/cam). It panics on a
// URL that does not parse: tests build their URLs.
func WithLogin(u, name, pass string) string {
	pu, err := url.Parse(u)
	if err != nil {
		panic("framework: WithLogin: " + err.Error())
	}
	pu.User = url.UserPassword(name, pass)
	return pu.String()
}
