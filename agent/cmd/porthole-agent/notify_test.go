package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// notifyConfig writes an agent config whose notify: list is body.
func notifyConfig(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfg, []byte("name: home\nadmin: off\nstate_dir: "+dir+
		"\nddns:\n  hostname: home.example.com\n  provider: {type: duckdns, token: t0ken}\nnotify:\n"+body), 0o600)
	return cfg
}

func TestNotifyTestCommand(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/denied" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		got = append(got, string(b))
	}))
	defer srv.Close()
	cfg := notifyConfig(t, "  - {type: ntfy, url: \""+srv.URL+"/cams\"}\n  - {type: ntfy, url: \""+srv.URL+"/denied\"}\n")
	r := runArgs("-config", cfg, "notify-test")
	if r.code != 1 || !strings.Contains(r.stdout, "ok       notify[0] ntfy at 127.0.0.1") ||
		!strings.Contains(r.stdout, "problem  notify[1] ntfy at 127.0.0.1") || !strings.Contains(r.stdout, "HTTP 403") {
		t.Errorf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if len(got) != 1 || !strings.Contains(got[0], "a test notification from porthole-agent home") {
		t.Errorf("the receiver got %q", got)
	}
}

// -check knows whether shoutrrr can use a URL, and says where it is.
func TestCheckShoutrrrURL(t *testing.T) {
	cfg := notifyConfig(t, "  - type: shoutrrr\n    url: nosuch://s3cret@host\n")
	r := runArgs("-config", cfg, "-check")
	if r.code != 1 || !strings.Contains(r.stderr, cfg+":8: notify[0].url: shoutrrr cannot use this URL") || strings.Contains(r.stderr, "s3cret") {
		t.Errorf("exit %d\n%s", r.code, r.stderr)
	}
}
