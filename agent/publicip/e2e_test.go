package publicip

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestDetectLoopbackFakes runs a Detector over real fakes on 127.0.0.1: two
// honest echo services, one lying with a private address, one serving HTML,
// one hanging, a whoami DNS server, a DoH server and the relay's view. The
// hanging service must not hold the answer for its full timeout: the address
// change has to reach DNS in well under 2 s.
func TestDetectLoopbackFakes(t *testing.T) {
	const public = "203.0.113.7"
	var (
		mu      sync.Mutex
		current = public
	)
	honest := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Write([]byte(current + "\n"))
	})
	var sources []Source
	for _, h := range []http.HandlerFunc{
		honest,
		honest,
		body("10.0.0.1"),
		body("<html><body>Rate limited</body></html>"),
		func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
	} {
		sources = append(sources, echoServer(t, h))
	}
	udp, err := NewDNSSource(DNSConfig{QName: CloudflareWhoami, Server4: dnsServer(t, whoamiHandler(public))})
	if err != nil {
		t.Fatal(err)
	}
	var dohMu sync.Mutex
	var methods []string
	doh := httptest.NewTLSServer(dohHandler(public, &dohMu, &methods))
	defer doh.Close()
	dohSrc, err := NewDNSSource(DNSConfig{QName: CloudflareWhoami, DoH: doh.URL, Client: func(Family) *http.Client { return doh.Client() }})
	if err != nil {
		t.Fatal(err)
	}
	relay := NewFuncSource("relay", func(context.Context, Family) (netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		return netip.ParseAddr(current)
	})
	sources = append(sources, udp, dohSrc, relay)

	log, lb := newLog()
	d := New(Config{Sources: sources, Accept: testAccept, Logger: log, LocalAddrs: noLocal})
	start := time.Now()
	res, err := d.Detect(t.Context())
	took := time.Since(start)
	if err != nil || res.V4 != netip.MustParseAddr(public) {
		t.Fatalf("Detect = %s, %v\n%s", res.V4, err, lb)
	}
	if took > time.Second {
		t.Errorf("Detect took %s with one hanging source; want about Settle", took)
	}
	// Every bad answer that came in (the decision may cut slow ones off) has
	// its own log line.
	for _, a := range res.Answers {
		bad := errors.Is(a.Err, ErrBadAnswer) || errors.Is(a.Err, ErrNotGlobal)
		if n := len(lb.lines("answer rejected", "source="+a.Source)); (n == 1) != bad {
			t.Errorf("answer %s: logged as rejected %d times\n%s", a, n, lb)
		}
	}

	// The address changes: relay and the honest echoes see it, the DNS fakes
	// still say the old one. 3 votes against 2: the new address wins.
	mu.Lock()
	current = "198.51.100.20"
	mu.Unlock()
	res, err = d.Detect(t.Context())
	if err != nil || res.V4 != netip.MustParseAddr("198.51.100.20") {
		t.Fatalf("after change: %s, %v\n%s", res.V4, err, lb)
	}
}
