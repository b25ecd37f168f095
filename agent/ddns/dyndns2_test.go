package ddns

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/test/fakedyndns"
)

func TestParseDynDNSResponse(t *testing.T) {
	tests := []struct {
		body      string
		code      string
		addrs     int
		wantCode  string // DynDNSError code
		fatal     bool
		unexpectd bool
	}{
		{body: "good 203.0.113.5\n", code: "good", addrs: 1},
		{body: "nochg 203.0.113.5", code: "nochg", addrs: 1},
		{body: "good 203.0.113.5,2001:db8::1\r\n", code: "good", addrs: 2},
		{body: "GOOD", code: "good"},
		{body: "nochg 203.0.113.5\ngood 2001:db8::1\n", code: "good", addrs: 2},
		{body: "badauth", wantCode: "badauth", fatal: true},
		{body: "nohost\n", wantCode: "nohost", fatal: true},
		{body: "notfqdn", wantCode: "notfqdn", fatal: true},
		{body: "abuse", wantCode: "abuse", fatal: true},
		{body: "!donator", wantCode: "!donator", fatal: true},
		{body: "numhost", wantCode: "numhost", fatal: true},
		{body: "badagent", wantCode: "badagent", fatal: true},
		{body: "911", wantCode: "911"},
		{body: "dnserr", wantCode: "dnserr"},
		{body: "good 203.0.113.5\nabuse\n", wantCode: "abuse", fatal: true},
		{body: "", unexpectd: true},
		{body: "\n \n", unexpectd: true},
		{body: "<html>503 Service Unavailable</html>", unexpectd: true},
		{body: "good not-an-ip", unexpectd: true},
		{body: "good fe80::1%eth0", unexpectd: true},
	}
	for _, tt := range tests {
		res, err := ParseDynDNSResponse([]byte(tt.body))
		var de *DynDNSError
		switch {
		case tt.code != "":
			if err != nil || res.Code != tt.code || len(res.Addrs) != tt.addrs {
				t.Errorf("%q: got %+v, %v; want %s with %d addrs", tt.body, res, err, tt.code, tt.addrs)
			}
		case tt.wantCode != "":
			if !errors.As(err, &de) || de.Code != tt.wantCode || de.Fatal() != tt.fatal ||
				errors.Is(err, ErrRejected) != tt.fatal {
				t.Errorf("%q: got %v; want DynDNSError %s fatal=%v", tt.body, err, tt.wantCode, tt.fatal)
			}
		case tt.unexpectd:
			if !errors.Is(err, ErrUnexpectedAnswer) {
				t.Errorf("%q: got %+v, %v; want ErrUnexpectedAnswer", tt.body, res, err)
			}
		}
	}
	if d := (&DynDNSError{Code: "911"}).RetryAfter(); d < 30*time.Minute {
		t.Errorf("911 RetryAfter = %v, want >= 30m", d)
	}
	if !strings.Contains((&DynDNSError{Code: "badauth"}).Error(), "restart") {
		t.Errorf("badauth error does not say what to do")
	}
}

func FuzzParseDynDNSResponse(f *testing.F) {
	for _, s := range []string{"good 203.0.113.5", "nochg 2001:db8::1", "badauth", "911", "good 1.2.3.4,::1\nnochg", "", "abuse\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		res, err := ParseDynDNSResponse(body)
		if err != nil {
			if res.Code != "" || res.Addrs != nil {
				t.Fatalf("error with a result: %+v %v", res, err)
			}
			_ = err.Error()
			return
		}
		if res.Code != "good" && res.Code != "nochg" {
			t.Fatalf("success with code %q", res.Code)
		}
		if len(res.Addrs) > 8 {
			t.Fatalf("%d addrs", len(res.Addrs))
		}
		for _, a := range res.Addrs {
			if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
				t.Fatalf("bad addr %v", a)
			}
		}
	})
}

func newDynDNSForTest(t *testing.T, srv *fakedyndns.Server, user, pass string) Provider {
	t.Helper()
	p, err := NewProvider(ProviderConfig{Type: "dyndns2", BaseURL: srv.URL, Username: user, Password: pass},
		ProviderOptions{HTTPClient: srv.Client(), UserAgent: UserAgent("1.2.3")})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	v4a = netip.MustParseAddr("203.0.113.5")
	v4b = netip.MustParseAddr("203.0.113.6")
	v6a = netip.MustParseAddr("2001:db8::5")
	v6b = netip.MustParseAddr("2001:db8::6")
)

func TestDynDNS2Provider(t *testing.T) {
	ctx := context.Background()
	srv := fakedyndns.New(t, "alice", "s3cret", "home.example.com")
	p := newDynDNSForTest(t, srv, "alice", "s3cret")

	if _, err := p.Get(ctx, "home.example.com"); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Get = %v, want ErrUnsupported", err)
	}
	if err := p.Set(ctx, "home.example.com", Records{V4: v4a, V6: v6a}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if v4, v6 := srv.Published("home.example.com"); v4 != v4a || v6 != v6a {
		t.Fatalf("published %v %v", v4, v6)
	}
	r := srv.Requests()[0]
	if !r.AuthOK || r.UserAgent != "porthole-agent/1.2.3 (+https://github.com/porthole-dev/porthole)" ||
		r.Hostname != "home.example.com" || r.MyIP != "203.0.113.5,2001:db8::5" {
		t.Fatalf("request %+v", r)
	}
	// nochg is success.
	if err := p.Set(ctx, "home.example.com", Records{V4: v4a}, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Removing a family can't be said in dyndns2.
	if err := p.Set(ctx, "home.example.com", Records{V4: v4a, NoV6: true}, time.Minute); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("NoV6: %v", err)
	}

	cases := []struct {
		answer  fakedyndns.Answer
		fatal   bool
		minWait time.Duration
	}{
		{fakedyndns.Answer{Body: "badauth"}, true, 0},
		{fakedyndns.Answer{Body: "abuse"}, true, 0},
		{fakedyndns.Answer{Body: "nohost"}, true, 0},
		{fakedyndns.Answer{Status: 401, Body: "<html>unauthorized</html>"}, true, 0},
		{fakedyndns.Answer{Body: "911"}, false, 30 * time.Minute},
		{fakedyndns.Answer{Status: 429, RetryAfter: "120"}, false, 2 * time.Minute},
		{fakedyndns.Answer{Status: 503}, false, 0},
		{fakedyndns.Answer{Body: "good 127.0.0.1"}, false, 0}, // request ignored, not our address
	}
	for _, c := range cases {
		srv.Script(c.answer)
		err := p.Set(ctx, "home.example.com", Records{V4: v4b}, time.Minute)
		if err == nil {
			t.Errorf("%+v: no error", c.answer)
			continue
		}
		if errors.Is(err, ErrRejected) != c.fatal {
			t.Errorf("%+v: %v: fatal=%v, want %v", c.answer, err, !c.fatal, c.fatal)
		}
		var ra interface{ RetryAfter() time.Duration }
		if c.minWait > 0 && (!errors.As(err, &ra) || ra.RetryAfter() < c.minWait) {
			t.Errorf("%+v: %v: want RetryAfter >= %v", c.answer, err, c.minWait)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error leaks the password: %v", err)
		}
	}

	// Wrong credentials against the server's own logic.
	bad := newDynDNSForTest(t, srv, "alice", "wrong")
	if err := bad.Set(ctx, "home.example.com", Records{V4: v4b}, time.Minute); !errors.Is(err, ErrRejected) {
		t.Fatalf("wrong password: %v", err)
	}
	if v4, _ := srv.Published("home.example.com"); v4 != v4a {
		t.Fatalf("a failed update changed the record to %v", v4)
	}
}

func TestDynDNS2Config(t *testing.T) {
	for _, p := range []ProviderConfig{
		{Type: "dyndns2", Username: "u", Password: "p"},                              // no server
		{Type: "noip", Username: "u"},                                                // no password
		{Type: "dyndns2", BaseURL: "ftp://x", Username: "u", Password: "p"},          // scheme
		{Type: "dyndns2", BaseURL: "https://u:p@x/", Username: "u", Password: "p"},   // creds in URL
		{Type: "carrierpigeon", BaseURL: "https://x/", Username: "u", Password: "p"}, // type
	} {
		if _, err := NewProvider(p, ProviderOptions{}); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%+v: %v, want ErrBadConfig", p, err)
		}
	}
	for _, typ := range []string{"noip", "dynu"} {
		p, err := NewProvider(ProviderConfig{Type: typ, Username: "u", Password: "p"}, ProviderOptions{})
		if err != nil || p.Name() != typ {
			t.Errorf("%s: %v", typ, err)
		}
	}
}
