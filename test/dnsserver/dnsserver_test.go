package dnsserver

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestStartQueryUpdate(t *testing.T) {
	s := Start(t, "example.com")
	got, err := s.Addrs("other", dns.TypeA)
	if err != nil || len(got) != 1 || got[0] != netip.MustParseAddr("192.0.2.99") {
		t.Fatalf("other A = %v, %v", got, err)
	}

	m := new(dns.Msg)
	m.SetUpdate("example.com.")
	rr, _ := dns.NewRR("home.example.com. 60 IN A 203.0.113.7")
	m.Insert([]dns.RR{rr})
	m.SetTsig(s.KeyName, dns.HmacSHA256, 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", TsigSecret: map[string]string{s.KeyName: s.Key}}
	in, _, err := c.Exchange(m, s.Addr)
	if err != nil || in.Rcode != dns.RcodeSuccess {
		t.Fatalf("signed update: %v %v\n%s", in, err, s.Logs())
	}
	got, err = s.Addrs("home", dns.TypeA)
	if err != nil || len(got) != 1 || got[0] != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("home A = %v, %v", got, err)
	}

	// Unsigned updates are refused.
	m = new(dns.Msg)
	m.SetUpdate("example.com.")
	m.Insert([]dns.RR{rr})
	in, _, err = (&dns.Client{Net: "tcp"}).Exchange(m, s.Addr)
	if err != nil || in.Rcode == dns.RcodeSuccess {
		t.Fatalf("unsigned update accepted: %v %v", in, err)
	}
}
