package publicip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func v4(label, addr string) Source {
	return StaticSource{Label: label, V4: netip.MustParseAddr(addr)}
}

func failing(label string, err error) Source { return StaticSource{Label: label, Err: err} }

// hanging answers only when ctx ends.
func hanging(label string) Source {
	return NewFuncSource(label, func(ctx context.Context, _ Family) (netip.Addr, error) {
		<-ctx.Done()
		return netip.Addr{}, ctx.Err()
	})
}

func noLocal() ([]LocalAddr, error) { return nil, nil }

func TestDetectConsensusV4(t *testing.T) {
	const a, b = "203.0.113.7", "198.51.100.9"
	tests := []struct {
		name      string
		min       int
		sources   []Source
		want      string // "" = none
		wantErr   error
		ambiguous bool
	}{
		{"all agree", 2, []Source{v4("relay", a), v4("https", a), v4("dns", a)}, a, nil, false},
		{"majority", 2, []Source{v4("relay", a), v4("https", b), v4("dns", a)}, a, nil, false},
		{"disagree", 2, []Source{v4("relay", a), v4("https", b)}, "", ErrNoConsensus, true},
		{"tie", 2, []Source{v4("s1", a), v4("s2", b), v4("s3", a), v4("s4", b)}, "", ErrNoConsensus, true},
		{"too few", 2, []Source{v4("relay", a), failing("https", errors.New("timeout")), failing("dns", ErrNoAnswer)}, "", ErrNoConsensus, false},
		{"min_agree 1", 1, []Source{v4("relay", a)}, a, nil, false},
		{"min_agree 1 tie", 1, []Source{v4("relay", a), v4("https", b)}, "", ErrNoConsensus, true},
		{"min_agree 3 short", 3, []Source{v4("s1", a), v4("s2", a), v4("s3", b)}, "", ErrNoConsensus, true},
		{"private answers don't count", 2, []Source{v4("relay", a), v4("echo1", "192.168.1.1"), v4("echo2", "192.168.1.1")}, "", ErrNoConsensus, false},
		{"liars outvoted", 2, []Source{v4("relay", a), v4("echo1", "10.0.0.1"), v4("echo2", a), v4("echo3", b)}, a, nil, false},
		{"nothing valid", 2, []Source{failing("https", errors.New("refused")), v4("echo", "127.0.0.1")}, "", ErrNoValidAnswer, false},
		{"no sources", 2, nil, "", ErrNoValidAnswer, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, lb := newLog()
			d := New(Config{Sources: tt.sources, MinAgree: tt.min, Accept: testAccept, Logger: log, LocalAddrs: noLocal})
			res, err := d.Detect(t.Context())
			if tt.want != "" {
				if err != nil || res.V4 != netip.MustParseAddr(tt.want) || res.V4Err != nil {
					t.Fatalf("Detect = %s, %v, %v; want %s", res.V4, res.V4Err, err, tt.want)
				}
			} else {
				if res.V4.IsValid() || !errors.Is(res.V4Err, tt.wantErr) || !errors.Is(err, tt.wantErr) {
					t.Fatalf("Detect = %s, V4Err %v, err %v; want %v", res.V4, res.V4Err, err, tt.wantErr)
				}
				// The error and one log line name every source's answer.
				for _, s := range tt.sources {
					if !strings.Contains(err.Error(), s.Name()+"=") {
						t.Errorf("error %q lacks source %s", err, s.Name())
					}
				}
				if tt.wantErr == ErrNoConsensus {
					lines := lb.lines("no consensus")
					if len(lines) != 1 {
						t.Fatalf("want one no-consensus line, got:\n%s", lb)
					}
					for _, s := range tt.sources {
						if !strings.Contains(lines[0], s.Name()+"=") {
							t.Errorf("log line %q lacks source %s", lines[0], s.Name())
						}
					}
				}
			}
			if res.Ambiguous != tt.ambiguous {
				t.Errorf("Ambiguous = %v, want %v", res.Ambiguous, tt.ambiguous)
			}
			if len(res.Answers) != len(tt.sources) {
				t.Errorf("%d answers for %d sources", len(res.Answers), len(tt.sources))
			}
			if res.V6.IsValid() || res.V6Err != nil {
				t.Errorf("IPv6 off but V6 = %s, %v", res.V6, res.V6Err)
			}
		})
	}
}

func TestDetectLogsBadAnswers(t *testing.T) {
	log, lb := newLog()
	d := New(Config{
		Sources: []Source{
			v4("relay", "203.0.113.7"),
			v4("dns", "203.0.113.7"),
			v4("echo-private", "192.168.1.1"),
			failing("echo-html", fmt.Errorf("HTML, not an address: %w", ErrBadAnswer)),
			v4("echo-other", "198.51.100.9"),
		},
		Accept: testAccept, Logger: log, LocalAddrs: noLocal,
	})
	res, err := d.Detect(t.Context())
	if err != nil || res.V4 != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("Detect = %s, %v", res.V4, err)
	}
	for _, want := range [][]string{
		{"level=WARN", "answer rejected", "source=echo-private", "private"},
		{"level=WARN", "answer rejected", "source=echo-html", "HTML"},
		{"level=WARN", "disagree", "echo-other=198.51.100.9"},
		{"level=INFO", "detected", "addr=203.0.113.7"},
	} {
		if len(lb.lines(want...)) != 1 {
			t.Errorf("want one log line with %q, got:\n%s", want, lb)
		}
	}
	// The answer keeps the rejected address for status output.
	for _, a := range res.Answers {
		if a.Source == "echo-private" && (a.Addr != netip.MustParseAddr("192.168.1.1") || !errors.Is(a.Err, ErrNotGlobal)) {
			t.Errorf("private answer recorded as %+v", a)
		}
	}
	// A steady state is logged at debug level the next time.
	if _, err := d.Detect(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(lb.lines("level=INFO", "detected")); n != 1 {
		t.Errorf("steady state logged at info %d times", n)
	}
}

// opSource is a static source with an operator.
type opSource struct {
	StaticSource
	op string
}

func (s opSource) Operator() string { return s.op }

func TestDetectOperatorsVoteOnce(t *testing.T) {
	a, b := netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("198.51.100.9")
	ipify1 := opSource{StaticSource{Label: "https://api.ipify.org", V4: b}, "ipify"}
	ipify2 := opSource{StaticSource{Label: "https://api64.ipify.org", V4: b}, "ipify"}
	// One operator agreeing with itself is not a consensus.
	d := New(Config{Sources: []Source{ipify1, ipify2}, Accept: testAccept, LocalAddrs: noLocal})
	if res, err := d.Detect(t.Context()); err == nil || !errors.Is(res.V4Err, ErrNoConsensus) {
		t.Fatalf("one operator twice: %s, %v", res.V4, err)
	}
	// Two independent sources outvote one operator's two answers.
	d = New(Config{Sources: []Source{ipify1, ipify2, StaticSource{Label: "relay", V4: a}, StaticSource{Label: "dns", V4: a}},
		Accept: testAccept, LocalAddrs: noLocal})
	res, err := d.Detect(t.Context())
	if err != nil || res.V4 != a {
		t.Fatalf("Detect = %s, %v", res.V4, err)
	}
	if res.Answers[0].Operator != "ipify" || res.Answers[2].Operator != "relay" {
		t.Fatalf("operators: %+v", res.Answers)
	}
	// Real sources name their operators.
	for _, tc := range []struct{ url, op string }{
		{"https://api64.ipify.org", "ipify"}, {"https://icanhazip.com", "cloudflare"},
		{"https://ipv4.icanhazip.com", "cloudflare"}, {"https://ifconfig.co/ip", "ifconfig.co"},
		{"https://Echo.Example:8443/ip", "https://Echo.Example:8443/ip"}, // unknown: on its own
	} {
		s, err := NewHTTPSource(HTTPConfig{URL: tc.url})
		if err != nil || OperatorOf(s) != tc.op {
			t.Errorf("%s: operator %q, %v", tc.url, OperatorOf(s), err)
		}
	}
	if OperatorOf(CloudflareDoH()) != OperatorOf(CloudflareDNS()) {
		t.Error("Cloudflare's DoH and UDP whoami should be one operator")
	}
}

func TestDetectWrongFamilyFromSource(t *testing.T) {
	// A source that ignores the family is caught by the Detector too.
	liar := NewFuncSource("liar", func(context.Context, Family) (netip.Addr, error) {
		return netip.MustParseAddr("2001:db8::1"), nil
	})
	d := New(Config{Sources: []Source{liar, v4("relay", "203.0.113.7")}, MinAgree: 1, Accept: testAccept, LocalAddrs: noLocal})
	res, err := d.Detect(t.Context())
	if err != nil || res.V4 != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("Detect = %s, %v", res.V4, err)
	}
	if !errors.Is(res.Answers[0].Err, ErrWrongFamily) {
		t.Fatalf("liar's answer: %+v", res.Answers[0])
	}
}

func TestDetectIPv6(t *testing.T) {
	const prefix = "2001:db8:aa:bb:"
	src := func(label, addr string) Source {
		return StaticSource{Label: label, V4: netip.MustParseAddr("203.0.113.7"), V6: netip.MustParseAddr(addr)}
	}
	// Sources see different temporary addresses of the same /64.
	sources := []Source{
		src("relay", prefix+"1111:2222:3333:4444"),
		src("https", prefix+"5555:6666:7777:8888"),
		src("dns", prefix+"5555:6666:7777:8888"),
	}
	local := func() ([]LocalAddr, error) {
		return []LocalAddr{
			{Addr: netip.MustParseAddr(prefix + "5555:6666:7777:8888"), Temporary: true},
			{Addr: netip.MustParseAddr(prefix + "211:22ff:fe33:4455")},
			{Addr: netip.MustParseAddr("2001:db8:ff::1")}, // another prefix
		}, nil
	}
	tests := []struct {
		name  string
		local func() ([]LocalAddr, error)
		id    netip.Addr
		want  string
	}{
		{"stable local address", local, netip.Addr{}, prefix + "211:22ff:fe33:4455"},
		{"no local address: most seen", noLocal, netip.Addr{}, prefix + "5555:6666:7777:8888"},
		{"local listing fails", func() ([]LocalAddr, error) { return nil, errors.New("no netlink") }, netip.Addr{}, prefix + "5555:6666:7777:8888"},
		{"interface id", local, netip.MustParseAddr("::abcd:1"), prefix + ":abcd:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New(Config{Sources: sources, Accept: testAccept, IPv6: true, IPv6InterfaceID: tt.id, LocalAddrs: tt.local})
			res, err := d.Detect(t.Context())
			if err != nil || res.V6Err != nil {
				t.Fatalf("Detect: %v, %v", err, res.V6Err)
			}
			if res.V6 != netip.MustParseAddr(tt.want) || res.V4 != netip.MustParseAddr("203.0.113.7") {
				t.Fatalf("V6 = %s, V4 = %s; want %s", res.V6, res.V4, tt.want)
			}
			if len(res.Answers) != 6 || res.Answers[0].Family != IPv4 || res.Answers[5].Family != IPv6 {
				t.Fatalf("answers %v", res.Answers)
			}
		})
	}
}

func TestDetectIPv6Missing(t *testing.T) {
	// An IPv4-only home: IPv4 is published, IPv6 says why not, Detect succeeds.
	sources := []Source{v4("relay", "203.0.113.7"), v4("dns", "203.0.113.7")}
	d := New(Config{Sources: sources, Accept: testAccept, IPv6: true, LocalAddrs: noLocal})
	res, err := d.Detect(t.Context())
	if err != nil || res.V4 != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("Detect = %s, %v", res.V4, err)
	}
	if res.V6.IsValid() || !errors.Is(res.V6Err, ErrNoValidAnswer) {
		t.Fatalf("V6 = %s, %v", res.V6, res.V6Err)
	}
	// Different /64s disagree.
	d = New(Config{Sources: []Source{
		StaticSource{Label: "a", V6: netip.MustParseAddr("2001:db8:1:1::1")},
		StaticSource{Label: "b", V6: netip.MustParseAddr("2001:db8:1:2::1")},
	}, Accept: testAccept, IPv6: true, LocalAddrs: noLocal})
	res, err = d.Detect(t.Context())
	if err == nil || !errors.Is(res.V6Err, ErrNoConsensus) || !res.Ambiguous {
		t.Fatalf("different prefixes: %s, %v, %v", res.V6, res.V6Err, err)
	}
}

func TestDetectNAT(t *testing.T) {
	tests := []struct {
		router string
		want   NATKind
		relay  bool
	}{
		{"100.64.7.7", NATCGNAT, true},
		{"192.168.0.2", NATDouble, true},
		{"198.51.100.9", NATDouble, true},
		{"203.0.113.7", NATNone, false},
	}
	for _, tt := range tests {
		t.Run(tt.want.String()+"/"+tt.router, func(t *testing.T) {
			log, lb := newLog()
			d := New(Config{
				Sources: []Source{v4("relay", "203.0.113.7"), v4("https", "203.0.113.7"), v4("router", tt.router)},
				Accept:  testAccept, Logger: log, Router: "router", LocalAddrs: noLocal,
			})
			for range 3 {
				res, err := d.Detect(t.Context())
				if err != nil || res.V4 != netip.MustParseAddr("203.0.113.7") {
					t.Fatalf("Detect = %s, %v", res.V4, err)
				}
				if res.NAT != tt.want || res.RouterExternal != netip.MustParseAddr(tt.router) || res.NAT.RelayOnly() != tt.relay {
					t.Fatalf("NAT = %s (router %s), want %s", res.NAT, res.RouterExternal, tt.want)
				}
			}
			// One clear line, not one per check; a private router address is not a "bad answer".
			if n := len(lb.lines("nat="+tt.want.String(), "router_external="+tt.router)); n != 1 {
				t.Errorf("NAT logged %d times:\n%s", n, lb)
			}
			if tt.relay && len(lb.lines("relay path will be used")) != 1 {
				t.Errorf("no relay-path line:\n%s", lb)
			}
			if len(lb.lines("answer rejected", "source=router")) != 0 {
				t.Errorf("router's own address logged as a bad answer:\n%s", lb)
			}
		})
	}
}

// TestDetectSettle: a hanging source doesn't hold the answer for the whole
// timeout; the wait ends once agreement is certain, or Settle after a
// provisional majority.
func TestDetectSettle(t *testing.T) {
	const a = "203.0.113.7"
	tests := []struct {
		name    string
		min     int
		settle  time.Duration
		sources []Source
		took    time.Duration
		want    string
	}{
		{"certain at once", 2, 0, []Source{v4("relay", a), v4("dns", a), hanging("slow")}, 0, a},
		{"settle", 2, 0, []Source{v4("relay", a), v4("dns", a), hanging("slow1"), hanging("slow2")}, 300 * time.Millisecond, a},
		{"settle off", 2, -1, []Source{v4("relay", a), v4("dns", a), hanging("slow1"), hanging("slow2")}, 5 * time.Second, a},
		{"no majority waits for timeout", 2, 0, []Source{v4("relay", a), v4("dns", "198.51.100.9"), hanging("slow")}, 5 * time.Second, ""},
		{"hopeless ends early", 3, 0, []Source{v4("relay", a), failing("dns", errors.New("x")), failing("https", errors.New("y")), hanging("slow")}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := New(Config{Sources: tt.sources, MinAgree: tt.min, Accept: testAccept, Settle: tt.settle, LocalAddrs: noLocal})
				start := time.Now()
				res, _ := d.Detect(t.Context())
				if took := time.Since(start); took != tt.took {
					t.Errorf("took %s, want %s", took, tt.took)
				}
				if tt.want == "" {
					if res.V4.IsValid() {
						t.Fatalf("V4 = %s, want none", res.V4)
					}
					return
				}
				if res.V4 != netip.MustParseAddr(tt.want) {
					t.Fatalf("V4 = %s (%v)", res.V4, res.V4Err)
				}
				for _, ans := range res.Answers {
					if strings.HasPrefix(ans.Source, "slow") && tt.took < 5*time.Second && (!ans.Late || !errors.Is(ans.Err, context.Canceled)) {
						t.Errorf("%s not marked cut off: %+v", ans.Source, ans)
					}
				}
			})
		})
	}
}

func TestDetectCanceled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		d := New(Config{Sources: []Source{hanging("a"), hanging("b")}, LocalAddrs: noLocal})
		go func() {
			time.Sleep(time.Second) // fake time inside the bubble
			cancel()
		}()
		if _, err := d.Detect(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Detect after cancel: %v", err)
		}
	})
}

func TestNewWarnsImpossibleMinAgree(t *testing.T) {
	log, lb := newLog()
	New(Config{Sources: []Source{v4("relay", "203.0.113.7")}, MinAgree: 2, Logger: log})
	if len(lb.lines("level=WARN", "min_agree=2")) != 1 {
		t.Fatalf("no warning:\n%s", lb)
	}
}
