package ddns

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDuck answers like www.duckdns.org/update.
type fakeDuck struct {
	mu      sync.Mutex // guards the fields below
	queries []url.Values
	ip, v6  string
}

func (f *fakeDuck) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	if r.URL.Path != "/update" || q.Get("token") != "duck-token" || q.Get("domains") != "home" {
		fmt.Fprint(w, "KO")
		return
	}
	if q.Get("clear") == "true" {
		f.ip, f.v6 = "", ""
	} else {
		f.ip, f.v6 = q.Get("ip"), q.Get("ipv6")
	}
	fmt.Fprintf(w, "OK\n%s\n%s\nUPDATED", f.ip, f.v6)
}

func (f *fakeDuck) get() (ip, v6 string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ip, f.v6
}

func TestDuckDNS(t *testing.T) {
	ctx := context.Background()
	fd := &fakeDuck{}
	ts := httptest.NewTLSServer(fd)
	defer ts.Close()
	mk := func(token string) Provider {
		p, err := NewProvider(ProviderConfig{Type: "duckdns", Token: token, BaseURL: ts.URL}, ProviderOptions{HTTPClient: ts.Client()})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := mk("duck-token")
	if err := p.Set(ctx, "home.duckdns.org", Records{V4: v4a, V6: v6a}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if ip, v6 := fd.get(); ip != v4a.String() || v6 != v6a.String() {
		t.Fatalf("stored %q %q", ip, v6)
	}
	// AAAA alone would let DuckDNS guess the A record.
	if err := p.Set(ctx, "home.duckdns.org", Records{V6: v6b}, time.Minute); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("v6 only: %v", err)
	}
	if err := p.Set(ctx, "home.duckdns.org", Records{V4: v4b, NoV6: true}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if ip, v6 := fd.get(); ip != v4b.String() || v6 != "" {
		t.Fatalf("after removing v6: %q %q", ip, v6)
	}
	if err := p.Delete(ctx, "home.duckdns.org"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if ip, _ := fd.get(); ip != "" {
		t.Fatalf("delete left ip %q", ip)
	}
	if err := p.Set(ctx, "home.example.com", Records{V4: v4a}, time.Minute); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("non-duckdns host: %v", err)
	}
	err := mk("wrong-token").Set(ctx, "home.duckdns.org", Records{V4: v4a}, time.Minute)
	if !errors.Is(err, ErrRejected) || strings.Contains(err.Error(), "wrong-token") {
		t.Fatalf("bad token: %v", err)
	}
	// Transport errors must not carry the URL (it holds the token).
	ts.Close()
	err = p.Set(ctx, "home.duckdns.org", Records{V4: v4a}, time.Minute)
	if err == nil || strings.Contains(err.Error(), "duck-token") {
		t.Fatalf("closed server: %v", err)
	}
	fd.mu.Lock()
	defer fd.mu.Unlock()
	for _, q := range fd.queries {
		if q.Get("ip") == "" && q.Get("clear") != "true" {
			t.Errorf("update without ip: %v", q)
		}
	}
}
