package agent

import (
	"strings"
	"testing"
	"time"
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
