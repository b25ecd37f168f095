package publicip

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

func TestPickIPv6(t *testing.T) {
	p := netip.MustParsePrefix("2a01:4f8:1:2::/64")
	la := func(s string, mod func(*LocalAddr)) LocalAddr {
		l := LocalAddr{Addr: netip.MustParseAddr(s), PrefixLen: 64, Iface: "eth0"}
		if mod != nil {
			mod(&l)
		}
		return l
	}
	temp := func(l *LocalAddr) { l.Temporary = true }
	depr := func(l *LocalAddr) { l.Deprecated = true }
	tent := func(l *LocalAddr) { l.Tentative = true }
	tests := []struct {
		name   string
		addrs  []LocalAddr
		within netip.Prefix
		want   string
	}{
		{"stable over temporary", []LocalAddr{
			la("2a01:4f8:1:2:1c2d:aaaa:bbbb:cccc", temp),
			la("2a01:4f8:1:2:211:22ff:fe33:4455", nil),
		}, p, "2a01:4f8:1:2:211:22ff:fe33:4455"},
		{"deprecated and tentative skipped", []LocalAddr{
			la("2a01:4f8:1:2::1", depr),
			la("2a01:4f8:1:2::2", tent),
			la("2a01:4f8:1:2::9", nil),
		}, p, "2a01:4f8:1:2::9"},
		{"lowest of several stable", []LocalAddr{
			la("2a01:4f8:1:2::20", nil),
			la("2a01:4f8:1:2::10", nil),
		}, p, "2a01:4f8:1:2::10"},
		{"outside prefix skipped", []LocalAddr{
			la("2a01:4f8:1:3::1", nil),
		}, p, ""},
		{"any prefix", []LocalAddr{
			la("2a01:4f8:1:3::1", nil),
		}, netip.Prefix{}, "2a01:4f8:1:3::1"},
		{"non-global skipped", []LocalAddr{
			la("fe80::1", nil), la("fd00::1", nil), la("::1", nil), la("192.0.2.1", nil),
		}, netip.Prefix{}, ""},
		{"only temporary", []LocalAddr{la("2a01:4f8:1:2::5", temp)}, p, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := PickIPv6(tt.addrs, tt.within, nil)
			if tt.want == "" {
				if ok {
					t.Fatalf("got %s, want none", got)
				}
				return
			}
			if !ok || got != netip.MustParseAddr(tt.want) {
				t.Fatalf("got %s %v, want %s", got, ok, tt.want)
			}
		})
	}
}

func TestWithInterfaceID(t *testing.T) {
	got := WithInterfaceID(netip.MustParseAddr("2a01:4f8:1:2:1c2d:aaaa:bbbb:cccc"), netip.MustParseAddr("::211:22ff:fe33:4455"))
	if want := netip.MustParseAddr("2a01:4f8:1:2:211:22ff:fe33:4455"); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	// High bits of the ID are ignored.
	got = WithInterfaceID(netip.MustParseAddr("2a01:4f8:1:2::1"), netip.MustParseAddr("fe80::abcd"))
	if want := netip.MustParseAddr("2a01:4f8:1:2::abcd"); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if got := WithInterfaceID(netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("::1")); got.IsValid() {
		t.Fatalf("IPv4 prefix: got %s", got)
	}
}

func TestJitter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	d := 5 * time.Minute
	lo, hi := d, d
	for range 1000 {
		j := Jitter(d, r)
		if j < d*9/10 || j > d*11/10 {
			t.Fatalf("Jitter(%s) = %s, outside ±10%%", d, j)
		}
		lo, hi = min(lo, j), max(hi, j)
	}
	if hi-lo < d/10 {
		t.Fatalf("spread %s..%s too narrow", lo, hi)
	}
	if Jitter(0, r) != 0 || Jitter(3, nil) != 3 {
		t.Fatal("tiny durations should pass through")
	}
}
