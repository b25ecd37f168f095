package publicip

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// echoServer serves body (or runs h) on 127.0.0.1 and returns an HTTPSource
// pointed at it, whose client is the server's own.
func echoServer(t *testing.T, h http.HandlerFunc) *HTTPSource {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	s, err := NewHTTPSource(HTTPConfig{URL: srv.URL, Client: func(Family) *http.Client { return srv.Client() }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func body(s string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(s)) }
}

func TestHTTPSource(t *testing.T) {
	tests := []struct {
		name    string
		h       http.HandlerFunc
		fam     Family
		want    string
		wantErr error // nil with want == "" means "some error"
	}{
		{"bare v4", body("203.0.113.9"), IPv4, "203.0.113.9", nil},
		{"newline", body("203.0.113.9\r\n"), IPv4, "203.0.113.9", nil},
		{"v6", body("  2001:db8::9\n"), IPv6, "2001:db8::9", nil},
		// The source returns the address; Valid (in the Detector) rejects private ones.
		{"private is returned raw", body("192.168.1.1\n"), IPv4, "192.168.1.1", nil},
		{"html", body("<html><body>Your IP is 203.0.113.9</body></html>"), IPv4, "", ErrBadAnswer},
		{"empty", body(""), IPv4, "", ErrBadAnswer},
		{"garbage", body("hello world"), IPv4, "", ErrBadAnswer},
		{"json", body(`{"ip":"203.0.113.9"}`), IPv4, "", ErrBadAnswer},
		{"two addresses", body("203.0.113.9 203.0.113.10"), IPv4, "", ErrBadAnswer},
		{"too long", body(strings.Repeat(" ", 300) + "203.0.113.9"), IPv4, "", ErrBadAnswer},
		{"huge", body(strings.Repeat("x", 1<<20)), IPv4, "", ErrBadAnswer},
		{"wrong family", body("2001:db8::9"), IPv4, "", ErrWrongFamily},
		{"status", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "203.0.113.9", http.StatusServiceUnavailable)
		}, IPv4, "", nil},
		{"redirect loop", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/again", http.StatusFound)
		}, IPv4, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := echoServer(t, tt.h)
			a, err := s.Lookup(t.Context(), tt.fam)
			if tt.want != "" {
				if err != nil || a != netip.MustParseAddr(tt.want) {
					t.Fatalf("Lookup = %s, %v; want %s", a, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Lookup = %s, want error", a)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Lookup error %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestHTTPSourceHang(t *testing.T) {
	s := echoServer(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.Lookup(ctx, IPv4); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lookup on a hanging server: %v, want deadline exceeded", err)
	}
}

func TestHTTPSourceHeaders(t *testing.T) {
	var got http.Header
	s := echoServer(t, func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.Write([]byte("203.0.113.9"))
	})
	if _, err := s.Lookup(t.Context(), IPv4); err != nil {
		t.Fatal(err)
	}
	if got.Get("Accept") != "text/plain" || !strings.HasPrefix(got.Get("User-Agent"), "porthole") {
		t.Fatalf("headers %v", got)
	}
}

func TestNewHTTPSource(t *testing.T) {
	log, lb := newLog()
	s, err := NewHTTPSource(HTTPConfig{URL: "http://echo.example/ip", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != "http://echo.example/ip" {
		t.Fatalf("Name %q", s.Name())
	}
	if n := len(lb.lines("level=WARN", "plain http")); n != 1 {
		t.Fatalf("want one plain-http warning, got %d:\n%s", n, lb)
	}
	for _, bad := range []string{"", "ftp://x/", "https://", "://", "https://user:secret@echo.example/"} {
		if _, err := NewHTTPSource(HTTPConfig{URL: bad}); err == nil {
			t.Errorf("NewHTTPSource(%q) accepted", bad)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
	// Defaults are only constructed here, never queried.
	srcs, err := HTTPSources(nil, nil)
	if err != nil || len(srcs) != len(DefaultHTTPSURLs) {
		t.Fatalf("HTTPSources(nil) = %d, %v", len(srcs), err)
	}
	if _, err := HTTPSources([]string{"https://ok.example", "bogus"}, nil); err == nil {
		t.Fatal("HTTPSources accepted a bad URL")
	}
}

// TestFamilyClient checks that the client dials only its family: a request
// to 127.0.0.1 works over tcp4 and is refused over tcp6 without any traffic.
func TestFamilyClient(t *testing.T) {
	srv := httptest.NewServer(body("203.0.113.9"))
	defer srv.Close()
	for _, tc := range []struct {
		fam Family
		ok  bool
	}{{IPv4, true}, {IPv6, false}} {
		s, err := NewHTTPSource(HTTPConfig{URL: srv.URL, Client: func(f Family) *http.Client { return FamilyClient(f, nil) }})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Lookup(t.Context(), tc.fam)
		if tc.ok && err != nil {
			t.Errorf("%s: %v", tc.fam, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("%s: request to 127.0.0.1 succeeded over tcp6", tc.fam)
		}
	}

	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	srv6 := httptest.NewUnstartedServer(body("2001:db8::9"))
	srv6.Listener = l
	srv6.Start()
	defer srv6.Close()
	s, err := NewHTTPSource(HTTPConfig{URL: srv6.URL})
	if err != nil {
		t.Fatal(err)
	}
	if a, err := s.Lookup(t.Context(), IPv6); err != nil || a != netip.MustParseAddr("2001:db8::9") {
		t.Errorf("IPv6 over [::1]: %s, %v", a, err)
	}
	if _, err := s.Lookup(t.Context(), IPv4); err == nil {
		t.Error("request to [::1] succeeded over tcp4")
	}
}

// TestFamilyClientNoProxy: an echo service behind a proxy would see the proxy.
func TestFamilyClientNoProxy(t *testing.T) {
	tr := FamilyClient(IPv4, nil).Transport.(*http.Transport)
	if tr.Proxy != nil || !tr.DisableKeepAlives {
		t.Fatalf("transport: proxy set=%v keepalives=%v", tr.Proxy != nil, !tr.DisableKeepAlives)
	}
}

func TestParseEchoBody(t *testing.T) {
	good := map[string]string{
		"203.0.113.9":        "203.0.113.9",
		"\t203.0.113.9 \n":   "203.0.113.9",
		"2001:db8::1\n":      "2001:db8::1",
		"::ffff:203.0.113.9": "::ffff:203.0.113.9", // parsed; Valid rejects it
	}
	for in, want := range good {
		a, err := ParseEchoBody([]byte(in))
		if err != nil || a != netip.MustParseAddr(want) {
			t.Errorf("ParseEchoBody(%q) = %s, %v", in, a, err)
		}
	}
	for _, in := range []string{"", " \n", "<html>", "1.2.3", "203.0.113.009", "fe80::1%eth0",
		"203.0.113.9\n203.0.113.10", "ip=203.0.113.9", strings.Repeat("1", 257), "\x00\xff"} {
		if a, err := ParseEchoBody([]byte(in)); !errors.Is(err, ErrBadAnswer) {
			t.Errorf("ParseEchoBody(%q) = %s, %v; want ErrBadAnswer", in, a, err)
		}
	}
	// The error quotes the body, so a log line shows what the service said.
	_, err := ParseEchoBody([]byte("<html>\x1b[31mevil\n"))
	if err == nil || strings.ContainsAny(err.Error(), "\n\x1b") || !strings.Contains(err.Error(), `"<html>`) {
		t.Errorf("error %q should quote the body safely", err)
	}
}

func FuzzParseEchoBody(f *testing.F) {
	for _, s := range []string{"203.0.113.9\n", "2001:db8::1", "<html></html>", "", "fe80::1%lo", strings.Repeat("9", 300)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseEchoBody(b)
		if err != nil {
			if a.IsValid() || !errors.Is(err, ErrBadAnswer) {
				t.Fatalf("error %v with address %s", err, a)
			}
			return
		}
		if !a.IsValid() || a.Zone() != "" || len(b) > maxEchoBody {
			t.Fatalf("accepted %q as %s", b, a)
		}
		// What was accepted is exactly one address and some white space.
		if again, err := netip.ParseAddr(strings.TrimSpace(string(b))); err != nil || again != a {
			t.Fatalf("accepted %q as %s, reparse %s %v", b, a, again, err)
		}
	})
}
