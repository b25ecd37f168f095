package publicip

import (
	"net/netip"
	"strings"
	"testing"
)

func TestClassifyNAT(t *testing.T) {
	a := func(s string) netip.Addr {
		if s == "" {
			return netip.Addr{}
		}
		return netip.MustParseAddr(s)
	}
	tests := []struct {
		name           string
		router, public string
		accept         []netip.Prefix
		want           NATKind
	}{
		{"direct", "8.8.4.4", "8.8.4.4", nil, NATNone},
		{"direct lab", "203.0.113.7", "203.0.113.7", testAccept, NATNone},
		{"cgnat", "100.64.3.4", "8.8.4.4", nil, NATCGNAT},
		{"cgnat no public", "100.127.0.1", "", nil, NATCGNAT},
		{"cgnat accepted in lab is public", "100.64.3.4", "100.64.3.4", []netip.Prefix{cgnat}, NATNone},
		{"private upstream", "192.168.0.2", "8.8.4.4", nil, NATDouble},
		{"router differs", "8.8.8.8", "8.8.4.4", nil, NATDouble},
		{"documentation range not accepted", "203.0.113.7", "203.0.113.7", nil, NATDouble},
		{"router unknown", "", "8.8.4.4", nil, NATUnknown},
		{"router reports 0.0.0.0", "0.0.0.0", "8.8.4.4", nil, NATUnknown},
		{"public unknown", "8.8.8.8", "", nil, NATUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ClassifyNAT(a(tt.router), a(tt.public), tt.accept); got != tt.want {
				t.Fatalf("ClassifyNAT(%s, %s) = %s, want %s", tt.router, tt.public, got, tt.want)
			}
		})
	}
}

func TestNATKindText(t *testing.T) {
	for _, k := range []NATKind{NATCGNAT, NATDouble} {
		if !k.RelayOnly() || !strings.Contains(k.Explain(), "relay path will be used") {
			t.Errorf("%s: RelayOnly=%v Explain=%q", k, k.RelayOnly(), k.Explain())
		}
	}
	for _, k := range []NATKind{NATUnknown, NATNone} {
		if k.RelayOnly() {
			t.Errorf("%s: RelayOnly", k)
		}
	}
	seen := map[string]bool{}
	for _, k := range []NATKind{NATUnknown, NATNone, NATCGNAT, NATDouble} {
		if seen[k.String()] {
			t.Errorf("duplicate String %q", k)
		}
		seen[k.String()] = true
	}
}
