package ddns

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/test/fakecloudflare"
)

const cfToken = "cf-test-token-0123456789"

func newCloudflareForTest(t *testing.T, srv *fakecloudflare.Server, token, zone string) Provider {
	t.Helper()
	p, err := NewProvider(ProviderConfig{Type: "cloudflare", Zone: zone, APIToken: token, BaseURL: srv.URL},
		ProviderOptions{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCloudflareProvider(t *testing.T) {
	ctx := context.Background()
	srv := fakecloudflare.New(t, cfToken, "example.com")
	srv.AddRecord("example.com", "A", "other", "192.0.2.99", 300)
	srv.AddRecord("example.com", "TXT", "home", `"keep me"`, 300)
	srv.AddRecord("example.com", "A", "@", "192.0.2.1", 300)
	p := newCloudflareForTest(t, srv, cfToken, "example.com")
	const host = "home.example.com"

	got, err := p.Get(ctx, host)
	if err != nil || got != (Records{NoV4: true, NoV6: true}) {
		t.Fatalf("Get on empty = %v, %v", got, err)
	}
	if err := p.Set(ctx, host, Records{V4: v4a, V6: v6a}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, err := p.Get(ctx, host); err != nil || got != (Records{V4: v4a, V6: v6a}) {
		t.Fatalf("Get after Set = %v, %v", got, err)
	}
	// Update in place, leave AAAA alone.
	if err := p.Set(ctx, host, Records{V4: v4b}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if a, aaaa := srv.Lookup(host, "A"), srv.Lookup(host, "AAAA"); !reflect.DeepEqual(a, []string{v4b.String()}) ||
		!reflect.DeepEqual(aaaa, []string{v6a.String()}) {
		t.Fatalf("after update: A %v AAAA %v", a, aaaa)
	}
	// Remove AAAA explicitly.
	if err := p.Set(ctx, host, Records{V4: v4b, NoV6: true}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if aaaa := srv.Lookup(host, "AAAA"); len(aaaa) != 0 {
		t.Fatalf("AAAA not removed: %v", aaaa)
	}
	if err := p.Delete(ctx, host); err != nil {
		t.Fatal(err)
	}
	// Only our records were touched; TTL was the configured one.
	var left []string
	for _, r := range srv.All() {
		left = append(left, r.Type+" "+r.Name+" "+r.Content)
	}
	want := []string{"A example.com 192.0.2.1", "TXT home.example.com \"keep me\"", "A other.example.com 192.0.2.99"}
	if !reflect.DeepEqual(left, want) {
		t.Fatalf("zone after delete:\n%s\nwant\n%s", strings.Join(left, "\n"), strings.Join(want, "\n"))
	}
	for _, l := range srv.Log() {
		if !strings.HasPrefix(l, "GET ") && !strings.HasPrefix(l, "POST ") && !strings.HasPrefix(l, "PATCH ") && !strings.HasPrefix(l, "DELETE ") {
			t.Errorf("unexpected request %s", l)
		}
	}
}

func TestCloudflareTTL(t *testing.T) {
	srv := fakecloudflare.New(t, cfToken, "example.com")
	p := newCloudflareForTest(t, srv, cfToken, "example.com")
	if err := p.Set(context.Background(), "home.example.com", Records{V4: v4a}, 120*time.Second); err != nil {
		t.Fatal(err)
	}
	if r := srv.All(); len(r) != 1 || r[0].TTL != 120 {
		t.Fatalf("records %+v, want TTL 120", r)
	}
}

func TestCloudflareErrors(t *testing.T) {
	ctx := context.Background()
	srv := fakecloudflare.New(t, cfToken, "example.com")
	const host = "home.example.com"

	bad := newCloudflareForTest(t, srv, "wrong-token", "example.com")
	err := bad.Set(ctx, host, Records{V4: v4a}, time.Minute)
	if he, ok := errorsAsHTTP(err); !ok || !he.Auth() {
		t.Fatalf("bad token: %v, want 401 HTTPError", err)
	}
	if strings.Contains(err.Error(), "wrong-token") || !strings.Contains(err.Error(), "token") {
		t.Fatalf("bad token error %q: leaks the token or doesn't say what to check", err)
	}

	p := newCloudflareForTest(t, srv, cfToken, "example.com")
	srv.Inject(fakecloudflare.Fault{Status: 429, RetryAfter: "90"}, 1)
	err = p.Set(ctx, host, Records{V4: v4a}, time.Minute)
	if he, ok := errorsAsHTTP(err); !ok || !he.Temporary() || he.RetryAfter() != 90*time.Second {
		t.Fatalf("429: %v", err)
	}
	srv.Inject(fakecloudflare.Fault{Status: 502, HTML: true}, 1)
	err = p.Set(ctx, host, Records{V4: v4a}, time.Minute)
	if he, ok := errorsAsHTTP(err); !ok || he.StatusCode != 502 {
		t.Fatalf("502: %v", err)
	}
	srv.Inject(fakecloudflare.Fault{Status: 500, WritesOnly: true}, 1)
	err = p.Set(ctx, host, Records{V4: v4a}, time.Minute)
	if he, ok := errorsAsHTTP(err); !ok || he.StatusCode != 500 {
		t.Fatalf("500 on write: %v", err)
	}
	if a := srv.Lookup(host, "A"); len(a) != 0 {
		t.Fatalf("a failed write published %v", a)
	}

	other := newCloudflareForTest(t, srv, cfToken, "example.org")
	err = other.Set(ctx, "home.example.org", Records{V4: v4a}, time.Minute)
	if !errors.Is(err, ErrUnknownZone) || !strings.Contains(err.Error(), "example.org") {
		t.Fatalf("unknown zone: %v", err)
	}
	if err := p.Set(ctx, "home.example.org", Records{V4: v4a}, time.Minute); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("host outside zone: %v", err)
	}
}

func TestCloudflareConfig(t *testing.T) {
	for _, p := range []ProviderConfig{
		{Type: "cloudflare", Zone: "example.com"},
		{Type: "cloudflare", APIToken: "x"},
		{Type: "cloudflare", APIToken: "x", Zone: "example.com", BaseURL: "ftp://x"},
		{Type: "cloudflare", APIToken: "x", Zone: "bad zone"},
	} {
		if _, err := NewProvider(p, ProviderOptions{}); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%+v: %v, want ErrBadConfig", p, err)
		}
	}
}
