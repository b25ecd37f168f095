package publicip

import (
	"errors"
	"net/netip"
	"testing"
)

func TestValid(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"8.8.8.8", true},
		{"1.1.1.1", true},
		{"100.63.255.255", true},
		{"100.128.0.0", true},
		{"2606:4700:4700::1111", true},
		{"2a00:1450:4001:80b::200e", true},
		{"2002:c000:204::1", true}, // 6to4 is routable, kept
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"192.168.1.1", false},
		{"127.0.0.1", false},
		{"169.254.1.1", false},
		{"100.64.0.1", false},
		{"100.127.255.255", false},
		{"192.0.0.9", false},
		{"192.0.2.1", false},
		{"198.18.0.1", false},
		{"198.19.255.255", false},
		{"198.51.100.7", false},
		{"203.0.113.7", false},
		{"224.0.0.1", false},
		{"239.255.255.250", false},
		{"240.0.0.1", false},
		{"255.255.255.255", false},
		{"::", false},
		{"::1", false},
		{"fe80::1", false},
		{"fe80::1%eth0", false},
		{"fc00::1", false},
		{"fd12:3456::1", false},
		{"ff02::1", false},
		{"2001:db8::1", false},
		{"2001::1", false},
		{"2001:10::1", false},
		{"3fff::1", false},
		{"::ffff:8.8.8.8", false},
		{"64:ff9b::808:808", false},
		{"100::1", false},
		{"fec0::1", false},
		{"4000::1", false},
		{"::8.8.8.8", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			err := Valid(mustAddr(t, tt.addr), nil)
			if (err == nil) != tt.ok {
				t.Fatalf("Valid(%s) = %v, want ok=%v", tt.addr, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrNotGlobal) {
				t.Fatalf("Valid(%s) = %v, want ErrNotGlobal", tt.addr, err)
			}
		})
	}
	if err := Valid(netip.Addr{}, nil); !errors.Is(err, ErrNotGlobal) {
		t.Fatalf("Valid(zero) = %v", err)
	}
}

func TestValidAccept(t *testing.T) {
	accept := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("100.64.0.0/10")}
	for _, s := range []string{"203.0.113.7", "100.64.1.1"} {
		if err := Valid(mustAddr(t, s), accept); err != nil {
			t.Errorf("Valid(%s, accept) = %v, want nil", s, err)
		}
	}
	for _, s := range []string{"198.51.100.7", "10.0.0.1"} {
		if err := Valid(mustAddr(t, s), accept); err == nil {
			t.Errorf("Valid(%s, accept) = nil, want error", s)
		}
	}
	// The error names the range, for the log line.
	err := Valid(mustAddr(t, "192.168.1.1"), nil)
	if got := err.Error(); got != "192.168.1.1 is private (RFC 1918): not a global unicast address" {
		t.Errorf("error text %q", got)
	}
}
