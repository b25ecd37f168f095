package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
)

// A self-signed certificate is what a browser warns about: status must say
// so and show the fingerprint to compare.
func TestPrintStatusCertificate(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	st := Status{Name: "home", Certificate: &CertStatus{Source: "self-signed", Fingerprint: "AB:CD",
		NotAfter: now.Add(365 * 24 * time.Hour), LastError: "acme: no route"},
		Services: []ServiceStatus{{Name: "web", Kind: "http", TLS: true, Port: 10443, Target: "192.168.1.20:80"}}}
	var b strings.Builder
	PrintStatus(&b, st, now)
	out := b.String()
	for _, want := range []string{"tls:      self-signed, valid until 2027-12-02", "browsers will warn",
		"fingerprint AB:CD", "last error: acme: no route", "web: public port 10443 -> 192.168.1.20:80 (http, tls)"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// Status shows what a viewer opens: rtsps://host:port/<service> for rtsp
// (rtsp:// with tls off), https://host:port/ for http, nothing for tcp or
// while the host is unknown.
func TestViewerURL(t *testing.T) {
	for _, tc := range []struct {
		s    config.Service
		host string
		want string
	}{
		{config.Service{Name: "frontdoor", Kind: config.KindRTSP, TLS: true, Port: 10554}, "home.example.com", "rtsps://home.example.com:10554/frontdoor"},
		{config.Service{Name: "yard", Kind: config.KindRTSP, Port: 10555}, "203.0.113.7", "rtsp://203.0.113.7:10555/yard"},
		{config.Service{Name: "web", Kind: config.KindHTTP, TLS: true, Port: 10443}, "home.example.com", "https://home.example.com:10443/"},
		{config.Service{Name: "cam", Kind: config.KindTCP, Port: 10556}, "home.example.com", ""},
		{config.Service{Name: "frontdoor", Kind: config.KindRTSP, TLS: true, Port: 10554}, "", ""},
	} {
		if got := viewerURL(tc.s, tc.host); got != tc.want {
			t.Errorf("viewerURL(%s, %q) = %q, want %q", tc.s.Name, tc.host, got, tc.want)
		}
	}
	var b strings.Builder
	PrintStatus(&b, Status{Name: "home", Services: []ServiceStatus{{Name: "frontdoor", Kind: "rtsp", TLS: true, Port: 10554,
		Target: "192.168.1.20:554", URL: "rtsps://home.example.com:10554/frontdoor"}}}, time.Now())
	for _, want := range []string{"frontdoor: public port 10554 -> 192.168.1.20:554 (rtsp, tls)", "open:    rtsps://home.example.com:10554/frontdoor"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}
