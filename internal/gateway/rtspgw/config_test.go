package rtspgw

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestNewRefusesBadConfig(t *testing.T) {
	ok := Config{Service: "cam", Target: "127.0.0.1:554", Path: "/s", Auth: newFakeAuth()}
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Service = "" }, "Service is required"},
		{func(c *Config) { c.Service = "a/b" }, "single URL path segment"},
		{func(c *Config) { c.Service = `a"b` }, "single URL path segment"},
		{func(c *Config) { c.Auth = nil }, "Auth is required"},
		{func(c *Config) { c.Target = "" }, "Target is required"},
		{func(c *Config) { c.Target = "camera" }, `Target "camera"`},
		{func(c *Config) { c.Path = "" }, "Path is required"},
		{func(c *Config) { c.WriteQueueSize = 100 }, "WriteQueueSize 100 is not a power of two"},
	} {
		cfg := ok
		tc.mod(&cfg)
		h, err := New(cfg)
		if err == nil {
			h.Close()
			t.Errorf("%+v: no error", cfg)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %q, want %q", err, tc.want)
		}
	}
	h, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	h.Close() // idempotent
}

func TestCredentialsRedacted(t *testing.T) {
	c := Credentials{Username: "admin", Password: "s3cret"}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "login", c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c), b.String()} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("password shown: %s", s)
		}
	}
}
