package ddns

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/porthole-dev/porthole/test/dnsserver"
)

func rfc2136Config(s *dnsserver.Server) ProviderConfig {
	return ProviderConfig{Type: "rfc2136", Server: s.Addr, Zone: s.Zone, KeyName: s.KeyName, KeyAlg: s.KeyAlg, Key: s.Key}
}

func addrs(t *testing.T, s *dnsserver.Server, name string, qt uint16) []netip.Addr {
	t.Helper()
	a, err := s.Addrs(name, qt)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return a
}

// TestRFC2136Knot runs the provider against a real Knot DNS server.
func TestRFC2136Knot(t *testing.T) {
	ctx := context.Background()
	s := dnsserver.Start(t, "example.com")
	p, err := NewProvider(rfc2136Config(s), ProviderOptions{DNSTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const host = "home.example.com"

	if got, err := p.Get(ctx, host); err != nil || got != (Records{NoV4: true, NoV6: true}) {
		t.Fatalf("Get on empty = %v, %v", got, err)
	}
	if err := p.Set(ctx, host, Records{V4: v4a, V6: v6a}, 90*time.Second); err != nil {
		t.Fatalf("Set: %v\n%s", err, s.Logs())
	}
	if got := addrs(t, s, host, dns.TypeA); !reflect.DeepEqual(got, []netip.Addr{v4a}) {
		t.Fatalf("A = %v", got)
	}
	rrs, _ := s.Query(host, dns.TypeAAAA)
	if len(rrs) != 1 || rrs[0].Header().Ttl != 90 {
		t.Fatalf("AAAA = %v, want one with TTL 90", rrs)
	}
	if got, err := p.Get(ctx, host); err != nil || got != (Records{V4: v4a, V6: v6a}) {
		t.Fatalf("Get = %v, %v", got, err)
	}
	// Replace A, leave AAAA.
	if err := p.Set(ctx, host, Records{V4: v4b}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := addrs(t, s, host, dns.TypeA); !reflect.DeepEqual(got, []netip.Addr{v4b}) {
		t.Fatalf("A after replace = %v", got)
	}
	if got := addrs(t, s, host, dns.TypeAAAA); !reflect.DeepEqual(got, []netip.Addr{v6a}) {
		t.Fatalf("AAAA touched: %v", got)
	}
	// Explicit removal of AAAA.
	if err := p.Set(ctx, host, Records{V4: v4b, NoV6: true}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := addrs(t, s, host, dns.TypeAAAA); len(got) != 0 {
		t.Fatalf("AAAA not removed: %v", got)
	}
	if err := p.Delete(ctx, host); err != nil {
		t.Fatal(err)
	}
	if got := addrs(t, s, host, dns.TypeA); len(got) != 0 {
		t.Fatalf("A not deleted: %v", got)
	}
	if got := addrs(t, s, "other", dns.TypeA); !reflect.DeepEqual(got, []netip.Addr{netip.MustParseAddr("192.0.2.99")}) {
		t.Fatalf("unrelated record changed: %v", got)
	}

	// Wrong key: refused, nothing published.
	bad := rfc2136Config(s)
	bad.Key = "d3Jvbmd3cm9uZ3dyb25nd3Jvbmd3cm9uZ3dyb25nMTI="
	pb, err := NewProvider(bad, ProviderOptions{DNSTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := pb.Set(ctx, host, Records{V4: v4a}, time.Minute); !errors.Is(err, ErrRejected) {
		t.Fatalf("bad key: %v", err)
	}
	if got := addrs(t, s, host, dns.TypeA); len(got) != 0 {
		t.Fatalf("bad key published %v", got)
	}

	// A zone the server doesn't serve.
	uz := rfc2136Config(s)
	uz.Zone = "example.org"
	pu, err := NewProvider(uz, ProviderOptions{DNSTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := pu.Set(ctx, "home.example.org", Records{V4: v4a}, time.Minute); !errors.Is(err, ErrUnknownZone) {
		t.Fatalf("unknown zone Set: %v", err)
	}
	if _, err := pu.Get(ctx, "home.example.org"); !errors.Is(err, ErrUnknownZone) {
		t.Fatalf("unknown zone Get: %v", err)
	}
}

func TestRFC2136Config(t *testing.T) {
	base := ProviderConfig{Type: "rfc2136", Server: "127.0.0.1:53", Zone: "example.com", KeyName: "k.", KeyAlg: "hmac-sha256", Key: "c2VjcmV0"}
	mut := []func(*ProviderConfig){
		func(p *ProviderConfig) { p.Server = "" },
		func(p *ProviderConfig) { p.Zone = "" },
		func(p *ProviderConfig) { p.KeyAlg = "hmac-md4" },
		func(p *ProviderConfig) { p.Key = "not base64!" },
		func(p *ProviderConfig) { p.KeyName = "" },
	}
	for i, m := range mut {
		p := base
		m(&p)
		if _, err := NewProvider(p, ProviderOptions{}); !errors.Is(err, ErrBadConfig) {
			t.Errorf("case %d: %v, want ErrBadConfig", i, err)
		}
	}
	if _, err := NewProvider(base, ProviderOptions{}); err != nil {
		t.Fatal(err)
	}
}

// countingProvider counts Set and Get calls of the provider it wraps.
type countingProvider struct {
	Provider
	mu         sync.Mutex // guards gets, sets
	gets, sets int
}

func (c *countingProvider) Get(ctx context.Context, host string) (Records, error) {
	c.mu.Lock()
	c.gets++
	c.mu.Unlock()
	return c.Provider.Get(ctx, host)
}

func (c *countingProvider) Set(ctx context.Context, host string, want Records, ttl time.Duration) error {
	c.mu.Lock()
	c.sets++
	c.mu.Unlock()
	return c.Provider.Set(ctx, host, want, ttl)
}

// TestUpdaterKnot drives the Updater against the real server: relay address
// first, then the home's verified addresses, then back to the relay without
// IPv6, 100 steady cycles in between.
func TestUpdaterKnot(t *testing.T) {
	s := dnsserver.Start(t, "example.com")
	p, err := NewProvider(rfc2136Config(s), ProviderOptions{DNSTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cp := &countingProvider{Provider: p}
	clk := newClock()
	u := newUpdater(t, UpdaterConfig{Provider: cp, Now: clk.Now, StateDir: t.TempDir()})
	const host = "home.example.com"
	relay := netip.MustParseAddr("198.51.100.7")

	steps := []struct {
		want     Records
		a, aaaa  []netip.Addr
		nowrites bool
	}{
		{want: Records{V4: relay, NoV6: true}, a: []netip.Addr{relay}},
		{want: Records{V4: v4a, V6: v6a}, a: []netip.Addr{v4a}, aaaa: []netip.Addr{v6a}},
		{want: Records{V4: relay, NoV6: true}, a: []netip.Addr{relay}},
	}
	for i, st := range steps {
		clk.Advance(5 * time.Minute)
		mustUpdate(t, u, st.want, ActionUpdated)
		cp.mu.Lock()
		before := cp.sets
		cp.mu.Unlock()
		for range 100 {
			clk.Advance(5 * time.Minute)
			mustUpdate(t, u, st.want, ActionUnchanged)
		}
		cp.mu.Lock()
		if cp.sets != before {
			t.Fatalf("step %d: %d writes in steady state", i, cp.sets-before)
		}
		cp.mu.Unlock()
		if got := addrs(t, s, host, dns.TypeA); !reflect.DeepEqual(got, st.a) {
			t.Fatalf("step %d: A = %v, want %v", i, got, st.a)
		}
		if got := addrs(t, s, host, dns.TypeAAAA); !reflect.DeepEqual(got, st.aaaa) {
			t.Fatalf("step %d: AAAA = %v, want %v", i, got, st.aaaa)
		}
	}
	if err := u.Delete(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := addrs(t, s, host, dns.TypeA); len(got) != 0 {
		t.Fatalf("A after delete: %v", got)
	}
}
