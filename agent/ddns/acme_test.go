package ddns

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"

	"github.com/porthole-dev/porthole/test/dnsserver"
)

// TestACMEDNSProviderKnot writes and removes a challenge TXT record on a
// real Knot server, as certmagic's DNS-01 solver does.
func TestACMEDNSProviderKnot(t *testing.T) {
	s := dnsserver.Start(t, "example.com")
	p, err := NewACMEDNSProvider(rfc2136Config(s), ProviderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	txt := libdns.TXT{Name: "_acme-challenge.home", Text: "key-authorization-digest", TTL: time.Minute}
	if _, err := p.AppendRecords(ctx, "example.com.", []libdns.Record{txt}); err != nil {
		t.Fatal(err)
	}
	txts := func() []string {
		rrs, err := s.Query("_acme-challenge.home.example.com.", dns.TypeTXT)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, rr := range rrs {
			if v, ok := rr.(*dns.TXT); ok {
				out = append(out, v.Txt...)
			}
		}
		return out
	}
	if got := txts(); len(got) != 1 || got[0] != "key-authorization-digest" {
		t.Fatalf("TXT after append = %q", got)
	}
	if _, err := p.DeleteRecords(ctx, "example.com.", []libdns.Record{txt}); err != nil {
		t.Fatal(err)
	}
	if got := txts(); len(got) != 0 {
		t.Fatalf("TXT after delete = %q", got)
	}
}

func TestACMEDNSProviderTypes(t *testing.T) {
	if _, err := NewACMEDNSProvider(ProviderConfig{Type: "cloudflare", Zone: "example.com", APIToken: "t"}, ProviderOptions{}); err != nil {
		t.Errorf("cloudflare: %v", err)
	}
	if _, err := NewACMEDNSProvider(ProviderConfig{Type: "rfc2136", Zone: "example.com", Server: "127.0.0.1"}, ProviderOptions{}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("rfc2136 without key: %v, want ErrBadConfig", err)
	}
	for _, typ := range []string{"duckdns", "dyndns2", "noip"} {
		if _, err := NewACMEDNSProvider(ProviderConfig{Type: typ}, ProviderOptions{}); !errors.Is(err, ErrNoDNS01) {
			t.Errorf("%s: %v, want ErrNoDNS01", typ, err)
		}
	}
	if _, err := NewACMEDNSProvider(ProviderConfig{Type: "nope"}, ProviderOptions{}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("unknown type: %v", err)
	}
}
