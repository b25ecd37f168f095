package config

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// fuzzParser is a parser whose environment and secret files are fixed, so
// fuzzing never touches the real file system.
func fuzzParser() *parser {
	p := newParser("/etc/porthole/fuzz.yaml", envOf("TOK", tokA, "EMPTY", ""))
	p.readFile = func(path string) ([]byte, error) {
		if strings.HasSuffix(path, ".missing") {
			return nil, os.ErrNotExist
		}
		return []byte(" " + tokA + "\n"), nil
	}
	return p
}

func addSeeds(f *testing.F, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	for _, name := range []string{"../../deploy/examples/relay.yaml", "../../deploy/examples/agent.yaml"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
}

// checkResult asserts the parser's contract: a config xor Errors, every
// problem with a message, and a config that satisfies the basic rules.
func checkResult[T any](t *testing.T, cfg *T, err error) {
	if (cfg == nil) == (err == nil) {
		t.Fatalf("cfg %v and err %v: want exactly one", cfg, err)
	}
	if err != nil {
		var es Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error %T %v is not a non-empty Errors", err, err)
		}
		for i, e := range es {
			if e.Msg == "" || (i > 0 && es[i-1].Line > e.Line) {
				t.Fatalf("bad problem list:\n%v", err)
			}
		}
	}
}

func FuzzParseRelay(f *testing.F) {
	addSeeds(f, designRelay,
		"agents:\n  a: {token_file: x, ports: 1-2}\n  b: {token: ${TOK}, ports: \"2\"}\n",
		"agents: &a {x: *a}\n",
		"listen: [\n")
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := fuzzParser().relay(data)
		checkResult(t, r, err)
		if r == nil {
			return
		}
		if len(r.Agents) == 0 {
			t.Fatal("relay config without agents")
		}
		for name, a := range r.Agents {
			if !nameRE.MatchString(name) || !tokenOK(a.Token) || a.Ports.Lo == 0 || a.Ports.Lo > a.Ports.Hi {
				t.Fatalf("invalid agent %q accepted: %v", name, a)
			}
		}
	})
}

func FuzzParseAgent(f *testing.F) {
	addSeeds(f, designAgent,
		"name: h\nddns: {hostname: h.example.com, provider: {type: rfc2136, server: 'n:53', zone: example.com, key_name: k, key_file: k.missing}}\n",
		"name: h\nservices: [{name: a, target: 'c:1', port: 1, allow: &l [any]}, {name: b, target: 'c:1', port: 2, allow: *l}]\n",
		"name: h\npublicip: {sources: [dns], https: ['http://x'], min_agree: ${N:-1}}\nddns: {hostname: a.b, provider: {type: duckdns, token: $$}}\n",
		"name: h\nrelay: {address: 'r:1', token: ${TOK}}\nservices: [{name: w, kind: http, target: 'c:80', port: 443, allow: [any], viewers: [a], camera_login: {username: u, password_file: p}, tls: off}]\n"+
			"viewers: {a: {password_hash: '"+hashAlice+"'}, b: {password_hash_file: h.missing}}\nddns: {hostname: a.b, provider: {type: noip, username: u, password: p}}\ntls: {acme_email: a@b, challenge: auto}\n",
		"name: h\nrelay: {address: 'r:1', token: ${TOK}}\nservices: [{name: w, kind: rtsp, target: 'c:1', port: 1, allow: [any], viewers: a}]\nviewers: {a: {password_hash: x}}\ntls: {cert_file: c, key_file: k.missing, acme_ca: 'https://x'}\n",
		"name: h\nrelay: {address: 'r:1', token: ${TOK}}\nservices: [{name: c, target: '10.0.0.5:1', port: 1, allow: [any]}]\nwireguard: {port: 51820, address: 10.77.0.1/24, lan_addresses: on, endpoint: 'h.example.com:1'}\n",
		"name: h\nrelay: {address: 'r:1', token: ${TOK}}\nwireguard: {port: 51820, listen_port: 51821, address: 10.77.0.1/24, endpoint: 'h.example.com:1'}\n",
		"name: h\nddns: {hostname: a.b, provider: {type: duckdns, token: t}}\nnotify: [{type: ntfy, url: 'https://n/t', token_file: t}, {type: webhook, url: ${TOK}, headers: {X-A: b}}, {type: shoutrrr, url_file: u.missing}]\n")
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := fuzzParser().agent(data)
		checkResult(t, a, err)
		if a == nil {
			return
		}
		if !nameRE.MatchString(a.Name) || (len(a.Services) == 0 && a.DDNS == nil) {
			t.Fatalf("invalid agent accepted: %+v", a)
		}
		if a.Relay != nil && !tokenOK(a.Relay.Token) {
			t.Fatal("weak relay token accepted")
		}
		for _, s := range a.Services {
			if s.Port == 0 || s.Name == "" || s.Target == "" || (s.AllowAny == (len(s.Allow) > 0)) || !supportedKinds[s.Kind] {
				t.Fatalf("invalid service accepted: %+v", s)
			}
			if !loginKinds[s.Kind] && (s.Viewers != nil || s.CameraLogin != nil || s.TLS) {
				t.Fatalf("login keys on a %s service accepted: %+v", s.Kind, s)
			}
			if loginKinds[s.Kind] && len(a.ServiceViewers(s)) == 0 {
				t.Fatalf("%s service without viewers accepted: %+v", s.Kind, s)
			}
			for _, v := range s.Viewers {
				if _, ok := a.Viewers[v]; !ok {
					t.Fatalf("service %s names undefined viewer %q", s.Name, v)
				}
			}
			if c := s.CameraLogin; c != nil && (c.Username == "" || c.Password == "") {
				t.Fatalf("camera_login without username or password accepted: %v", c)
			}
		}
		for name, v := range a.Viewers {
			if !nameRE.MatchString(name) || checkPHC(v.PasswordHash) != nil {
				t.Fatalf("invalid viewer %q accepted", name)
			}
		}
		if tc := a.TLS; tc != nil {
			acme := tc.ACMEEmail != ""
			if (tc.CertFile == "") != (tc.KeyFile == "") || acme && tc.CertFile != "" || acme != (tc.ACMECA != "") ||
				acme != (tc.Challenge == ChallengeDNS01 || tc.Challenge == ChallengeTLSALPN01) || !acme && tc.ACMECARoot != "" {
				t.Fatalf("inconsistent tls accepted: %+v", tc)
			}
		}
		if w := a.WireGuard; w != nil {
			pfx := w.Address
			if w.Port == 0 || !pfx.IsValid() || pfx.Addr() == pfx.Masked().Addr() || pfx.Bits() > pfx.Addr().BitLen()-2 || a.PhoneEndpoint() == "" {
				t.Fatalf("invalid wireguard accepted: %+v", w)
			}
			for _, s := range a.Services {
				if host, _, err := net.SplitHostPort(s.Target); err == nil {
					if ip, err := netip.ParseAddr(host); err == nil && pfx.Contains(ip.Unmap()) {
						t.Fatalf("tunnel subnet %s holding target %s accepted", pfx, s.Target)
					}
				}
			}
		}
		if a.PublicIP.MinAgree < 1 || a.PublicIP.Interval < MinPublicIPInterval {
			t.Fatalf("invalid publicip accepted: %+v", a.PublicIP)
		}
	})
}

func tokenOK(tok string) bool {
	_, err := CheckToken(tok)
	return err == nil
}
