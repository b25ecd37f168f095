package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// Lines 1-2: name and relay; 3: services:.
const svcHead = "name: home\nrelay: {address: \"relay.example.com:7443\", token: " + tokA + "}\nservices:\n"

// viewersAB defines alice and bob (3 lines).
const viewersAB = "viewers:\n  alice: {password_hash: \"" + hashAlice + "\"}\n  bob: {password_hash: \"" + hashBob + "\"}\n"

// An http service: defaults (TLS on, every viewer), the keys that go with
// it, and the warnings it earns.
func TestHTTPService(t *testing.T) {
	a, err := ParseAgent("a.yaml", []byte(svcHead+`  - name: web
    kind: HTTP
    target: 192.168.1.20:80
    port: 10443
    allow: [198.51.100.0/24]
  - name: web2
    kind: http
    target: 192.168.1.21:80
    port: 10444
    allow: [198.51.100.0/24]
    viewers: bob
    camera_login: {username: admin, password: "${CAM}"}
    tls: off
`+viewersAB), envOf("CAM", "cam-pass"))
	checkErrs(t, err)
	want := []Service{
		{Name: "web", Kind: KindHTTP, Target: "192.168.1.20:80", Port: 10443, TLS: true, LiveTimeout: DefaultLiveTimeout,
			Allow: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
		{Name: "web2", Kind: KindHTTP, Target: "192.168.1.21:80", Port: 10444, LiveTimeout: DefaultLiveTimeout,
			Allow: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, Viewers: []string{"bob"},
			CameraLogin: &CameraLogin{Username: "admin", Password: "cam-pass"}},
	}
	if !reflect.DeepEqual(a.Services, want) {
		t.Errorf("services\n%+v\nwant\n%+v", a.Services, want)
	}
	if got := a.ServiceViewers(a.Services[0]); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("ServiceViewers(web) = %q, want every viewer", got)
	}
	if got := a.ServiceViewers(a.Services[1]); !slices.Equal(got, []string{"bob"}) {
		t.Errorf("ServiceViewers(web2) = %q", got)
	}
	if got := a.ServiceViewers(Service{Kind: KindTCP}); got != nil {
		t.Errorf("ServiceViewers(tcp) = %q", got)
	}
	checkWarnings(t, a.Warnings, "cam-pass",
		"a.yaml:5: services[0].kind: no certificate: set tls: acme_email",
		"a.yaml:16: services[1].tls: off: viewers' passwords and video cross the internet unencrypted")
}

// An rtsp service: path required, low_path optional (query kept), TLS on by
// default, viewers and camera_login as for http.
func TestRTSPService(t *testing.T) {
	a, err := ParseAgent("a.yaml", []byte(svcHead+`  - name: frontdoor
    kind: RTSP
    target: 192.168.1.20:554
    port: 10554
    allow: [any]
    path: /Streaming/Channels/101
    low_path: "/cam/realmonitor?channel=1&subtype=1"
    viewers: [alice]
    camera_login: {username: admin, password: "${CAM}"}
  - {name: yard, kind: rtsp, target: "192.168.1.21:554", port: 10555, allow: [any], path: /live, tls: off}
`+viewersAB), envOf("CAM", "cam-pass"))
	checkErrs(t, err)
	want := []Service{
		{Name: "frontdoor", Kind: KindRTSP, Target: "192.168.1.20:554", Port: 10554, TLS: true, AllowAny: true,
			Path: "/Streaming/Channels/101", LowPath: "/cam/realmonitor?channel=1&subtype=1", Viewers: []string{"alice"},
			CameraLogin: &CameraLogin{Username: "admin", Password: "cam-pass"}, LiveTimeout: DefaultLiveTimeout},
		{Name: "yard", Kind: KindRTSP, Target: "192.168.1.21:554", Port: 10555, AllowAny: true, Path: "/live", LiveTimeout: DefaultLiveTimeout},
	}
	if !reflect.DeepEqual(a.Services, want) {
		t.Errorf("services\n%+v\nwant\n%+v", a.Services, want)
	}
	if got := a.ServiceViewers(a.Services[1]); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("ServiceViewers(yard) = %q, want every viewer", got)
	}
	checkWarnings(t, a.Warnings, "cam-pass",
		"a.yaml:5: services[0].kind: no certificate: set tls: acme_email",
		"a.yaml:13: services[1].tls: off: viewers' passwords and video cross the internet unencrypted")
}

// checkWarnings checks that got starts, one for one, with want and never
// shows secret.
func checkWarnings(t *testing.T, got []string, secret string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("warnings %q", got)
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) || strings.Contains(got[i], secret) {
			t.Errorf("warning %d = %q, want %q...", i, got[i], w)
		}
	}
}

// A portal: the phone page, no target, logins and TLS as http; viewers'
// daily caps and the services' live_timeout.
func TestPortalService(t *testing.T) {
	a, err := ParseAgent("a.yaml", []byte(svcHead+`  - {name: yard, kind: http, target: "c:80", port: 10443, allow: [any], mjpeg: /v.mjpg, live_timeout: 10m}
  - {name: hall, kind: http, target: "c:80", port: 10444, allow: [any], live_timeout: "off"}
  - name: phone
    kind: portal
    port: 10400
    allow: [any]
    viewers: [alice]
viewers:
  alice: {password_hash: "`+hashAlice+`", daily_cap: 500MB}
  bob: {password_hash: "`+hashBob+`", daily_cap: 1.5 GiB}
`), envOf())
	checkErrs(t, err)
	want := []Service{
		{Name: "yard", Kind: KindHTTP, Target: "c:80", Port: 10443, AllowAny: true, TLS: true, MJPEG: "/v.mjpg", LiveTimeout: 10 * time.Minute},
		{Name: "hall", Kind: KindHTTP, Target: "c:80", Port: 10444, AllowAny: true, TLS: true},
		{Name: "phone", Kind: KindPortal, Port: 10400, AllowAny: true, TLS: true, Viewers: []string{"alice"}},
	}
	if !reflect.DeepEqual(a.Services, want) {
		t.Errorf("services\n%+v\nwant\n%+v", a.Services, want)
	}
	if a.Viewers["alice"].DailyCap != 500e6 || a.Viewers["bob"].DailyCap != 1.5*(1<<30) {
		t.Errorf("daily caps %d, %d", a.Viewers["alice"].DailyCap, a.Viewers["bob"].DailyCap)
	}
	if got := a.ServiceViewers(a.Services[2]); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("ServiceViewers(phone) = %q", got)
	}
}

// tls: takes YAML booleans and on/off in any case; yaml.v3 reads on/off as strings.
func TestServiceTLSValues(t *testing.T) {
	for _, tc := range []struct {
		val  string
		want bool
	}{{"on", true}, {"On", true}, {"true", true}, {"yes", true}, {`"on"`, true}, {"off", false}, {"OFF", false}, {"false", false}, {"no", false}} {
		a, err := ParseAgent("a.yaml", []byte(svcHead+"  - {name: w, kind: http, target: \"c:80\", port: 10443, allow: [any], tls: "+tc.val+"}\n"+viewersAB), envOf())
		checkErrs(t, err)
		if a.Services[0].TLS != tc.want {
			t.Errorf("tls: %s = %v", tc.val, a.Services[0].TLS)
		}
	}
}

func TestServiceKindErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []want
	}{
		{"rtsp without path", svcHead + "  - {name: a, kind: rtsp, target: \"c:554\", port: 10554, allow: [any]}\n" + viewersAB,
			[]want{{4, "services[0].path", "required for kind rtsp: the camera's stream path, e.g. /Streaming/Channels/101"}}},
		{"rtsp paths not paths", svcHead + "  - name: a\n    kind: rtsp\n    target: \"c:554\"\n    port: 10554\n    allow: [any]\n    path: Streaming/Channels/101\n    low_path: \"/low #2\"\n" + viewersAB,
			[]want{{9, "services[0].path", `want the camera's RTSP URL path starting with /, e.g. /Streaming/Channels/101, got "Streaming/Channels/101"`},
				{10, "services[0].low_path", `want the camera's RTSP URL path starting with /, e.g. /Streaming/Channels/102, got "/low #2"`}}},
		{"rtsp with empty path", svcHead + "  - name: a\n    kind: rtsp\n    target: \"c:554\"\n    port: 10554\n    allow: [any]\n    path: \"\"\n" + viewersAB,
			[]want{{9, "services[0].path", "required for kind rtsp"}}},
		{"rtsp without viewers", svcHead + "  - {name: a, kind: rtsp, target: \"c:554\", port: 10554, allow: [any], path: /live}\n",
			[]want{{4, "services[0].kind", "kind rtsp needs viewers: add one under viewers:"}}},
		{"rtsp with mjpeg", svcHead + "  - {name: a, kind: rtsp, target: \"c:554\", port: 10554, allow: [any], path: /live, snapshot: /s.jpg}\n" + viewersAB,
			[]want{{4, "services[0].snapshot", "only http services serve the camera's snapshot; kind rtsp passes"}}},
		{"path on tcp and http", svcHead + "  - name: a\n    target: \"c:554\"\n    port: 10554\n    allow: [10.0.0.0/8]\n    path: /live\n  - name: b\n    kind: http\n    target: \"c:80\"\n    port: 10443\n    allow: [any]\n    low_path: /sub\n" + viewersAB,
			[]want{{8, "services[0].path", "only rtsp services name the camera's stream path; kind tcp serves the camera's own paths"},
				{14, "services[1].low_path", "only rtsp services name the camera's stream path; kind http"}}},
		{"portal with camera keys", svcHead + "  - name: a\n    target: \"c:80\"\n    port: 10400\n    allow: [any]\n    kind: portal\n" +
			"    camera_login: {username: a, password: b}\n    mjpeg: /v.mjpg\n    live_timeout: 5m\n" + viewersAB,
			[]want{
				{5, "services[0].target", "a portal has no target: it shows the cameras of the http and rtsp services"},
				{9, "services[0].camera_login", "kind portal has no camera to log in to"},
				{10, "services[0].mjpeg", "only http services serve the camera's mjpeg"},
				{11, "services[0].live_timeout", "only http/rtsp services serve live streams to end; kind portal has none"},
			}},
		{"portal without viewers", svcHead + "  - {name: a, kind: portal, port: 10400, allow: [any]}\n",
			[]want{{4, "services[0].kind", "kind portal needs viewers"}}},
		{"bad live_timeout and daily_cap", svcHead + "  - {name: a, kind: http, target: \"c:80\", port: 10443, allow: [any], live_timeout: 10s}\n" +
			"  - {name: b, kind: http, target: \"c:80\", port: 10444, allow: [any], live_timeout: soon}\n" +
			"viewers:\n  alice: {password_hash: \"" + hashAlice + "\", daily_cap: 5 parsecs}\n  bob: {password_hash: \"" + hashBob + "\", daily_cap: 0}\n",
			[]want{
				{4, "services[0].live_timeout", "10s is too short: at least 1m0s"},
				{5, "services[1].live_timeout", "expected a duration like 60s or 5m"},
				{7, "viewers.alice.daily_cap", `unknown unit "parsecs"`},
				{8, "viewers.bob.daily_cap", "out of range"},
			}},
		{"unknown kind", svcHead + "  - {name: a, kind: https, target: \"c:80\", port: 10400, allow: [any]}\n",
			[]want{{4, "services[0].kind", `unknown kind "https": use http, rtsp, portal or tcp`}}},
		{"http without viewers", svcHead + "  - name: a\n    kind: http\n    target: \"c:80\"\n    port: 10443\n    allow: [any]\n",
			[]want{{5, "services[0].kind", "kind http needs viewers: add one under viewers: (hash a password with `porthole-agent passwd`)"}}},
		{"http with empty viewers", svcHead + "  - {name: a, kind: http, target: \"c:80\", port: 10443, allow: [any]}\nviewers: {}\n",
			[]want{{4, "services[0].kind", "kind http needs viewers"}}},
		{"tcp with login keys", svcHead + `  - name: a
    target: "c:554"
    port: 10554
    allow: [10.0.0.0/8]
    viewers: [alice]
    camera_login: {username: admin, password: sekrit}
    tls: on
` + viewersAB, []want{
			{8, "services[0].viewers", "only http/rtsp services have logins"},
			{9, "services[0].camera_login", "only http/rtsp services log in to the camera"},
			{10, "services[0].tls", "only http/rtsp services speak TLS"},
		}},
		{"explicit tcp with tls", svcHead + "  - {name: a, kind: tcp, target: \"c:554\", port: 10554, allow: [10.0.0.0/8], tls: off}\n",
			[]want{{4, "services[0].tls", "only http/rtsp services speak TLS"}}},
		{"service viewers", svcHead + `  - name: a
    kind: http
    target: "c:80"
    port: 10443
    allow: [any]
    viewers: [alice, carol, alice]
  - {name: b, kind: http, target: "c:80", port: 10444, allow: [any], viewers: []}
` + viewersAB, []want{
			{9, "services[0].viewers[1]", `no viewer "carol" under viewers: (there: alice, bob)`},
			{9, "services[0].viewers[2]", `"alice" listed twice`},
			{10, "services[1].viewers", "empty: leave it out to let every viewer watch"},
		}},
		{"camera_login", svcHead + `  - name: a
    kind: http
    target: "c:80"
    port: 10443
    allow: [any]
    camera_login: {password: sekrit, user: admin}
  - name: b
    kind: http
    target: "c:80"
    port: 10444
    allow: [any]
    camera_login:
      username: admin
  - {name: c, kind: http, target: "c:80", port: 10445, allow: [any], camera_login: admin}
` + viewersAB, []want{
			{9, "", "unknown key services[0].camera_login.user"},
			{9, "services[0].camera_login.username", "required"},
			{16, "services[1].camera_login.password", "required: set password or password_file"},
			{17, "services[2].camera_login", "expected a mapping"},
		}},
		{"mjpeg and snapshot not paths", svcHead + "  - name: a\n    kind: http\n    target: \"c:80\"\n    port: 10443\n    allow: [any]\n    mjpeg: video.mjpg\n    snapshot: \"/snap shot.jpg\"\n" + viewersAB,
			[]want{{9, "services[0].mjpeg", "want the camera's URL path, e.g. /video.mjpg"}, {10, "services[0].snapshot", "want the camera's URL path, e.g. /snapshot.jpg"}}},
		{"mjpeg on tcp", svcHead + "  - name: a\n    target: \"c:80\"\n    port: 10443\n    allow: [10.0.0.0/8]\n    mjpeg: /video.mjpg\n",
			[]want{{8, "services[0].mjpeg", "only http services serve the camera's mjpeg"}}},
		{"tls value", svcHead + "  - {name: a, kind: http, target: \"c:80\", port: 10443, allow: [any], tls: maybe}\n" + viewersAB,
			[]want{{4, "services[0].tls", `expected true or false, got "maybe"`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAgent("a.yaml", []byte(tt.yaml), envOf())
			checkErrs(t, err, tt.want...)
			if a != nil {
				t.Errorf("got a config along with errors")
			}
			if err != nil && strings.Contains(err.Error(), "sekrit") {
				t.Errorf("error shows the camera password:\n%v", err)
			}
		})
	}
}

func TestViewersErrors(t *testing.T) {
	const svc = svcHead + "  - {name: a, kind: http, target: \"c:80\", port: 10443, allow: [any]}\n" // 4 lines
	tests := []struct {
		name string
		yaml string
		want []want
	}{
		{"not a mapping", svc + "viewers: [alice]\n", []want{{5, "viewers", "expected a mapping"}}},
		{"bad entries", svc + `viewers:
  Alice: {password_hash: "` + hashAlice + `"}
  bob: "` + hashBob + `"
  carol:
  dave: {}
  erin: {password_hash: "` + hashAlice + `", password_hash_file: x}
  frank: {password: x}
  ok: {password_hash: "` + hashAlice + `"}
`, []want{
			{6, "viewers.Alice", "invalid name"},
			{7, "viewers.bob", `expected {password_hash: "$argon2id$..."}`},
			{8, "viewers.carol", "got nothing"},
			{9, "viewers.dave.password_hash", "required (hash a password with `porthole-agent passwd`)"},
			{10, "viewers.erin.password_hash_file", "set either password_hash or password_hash_file, not both"},
			{11, "", "unknown key viewers.frank.password"},
			{11, "viewers.frank.password_hash", "required"},
		}},
		{"bad hashes", svc + `viewers:
  a: {password_hash: "$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$7tP3RHbY2BOLfpzu8CkmDRJzqk3jNqWq4kTk6BFgQ2I"}
  b: {password_hash: "hunter2"}
  c: {password_hash: "$argon2id$v=19$m=1,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$7tP3RHbY2BOLfpzu8CkmDRJzqk3jNqWq4kTk6BFgQ2I"}
`, []want{
			{6, "viewers.a.password_hash", "not a usable argon2id hash: not argon2id (hash a password with `porthole-agent passwd`)"},
			{7, "viewers.b.password_hash", "not a usable argon2id hash"},
			{8, "viewers.c.password_hash", "parameter m=1 out of range"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAgent("a.yaml", []byte(tt.yaml), envOf())
			checkErrs(t, err, tt.want...)
			if a != nil {
				t.Errorf("got a config along with errors")
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error echoes a hash:\n%v", err)
			}
		})
	}
}

// A hash may come from a file; unlike a secret, an open one gets no warning
// (the example config holds its hash inline and is world-readable).
func TestViewerHashFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "alice.hash"), []byte(hashAlice+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "home.token"), []byte(tokA), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "a.yaml")
	body := strings.Replace(svcHead, "token: "+tokA, "token_file: home.token", 1) + "  - {name: a, kind: http, target: \"c:80\", port: 10443, allow: [any]}\n" +
		"viewers:\n  alice: {password_hash_file: alice.hash}\n  bob: {password_hash: \"" + hashBob + "\"}\ntls: {cert_file: c.pem, key_file: k.pem}\n"
	writeKeyPair(t, dir, "c.pem", "k.pem", 0o600)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := LoadAgent(cfg)
	checkErrs(t, err)
	if a.Viewers["alice"].PasswordHash != hashAlice || a.Viewers["bob"].PasswordHash != hashBob || len(a.Warnings) != 0 {
		t.Errorf("viewers %v, warnings %q", a.Viewers, a.Warnings)
	}
	_, err = ParseAgent(cfg, []byte(svcHead+"  - {name: a, kind: http, target: \"c:80\", port: 10443, allow: [any]}\nviewers:\n  alice: {password_hash_file: missing.hash}\n"), envOf())
	checkErrs(t, err, want{6, "viewers.alice.password_hash_file", "cannot read " + filepath.Join(dir, "missing.hash")})
}

func TestCheckPHC(t *testing.T) {
	good := []string{hashAlice, hashBob, "$argon2id$v=19$m=8,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA"}
	for _, h := range good {
		if err := checkPHC(h); err != nil {
			t.Errorf("checkPHC(%q) = %v", h, err)
		}
	}
	const salt, sum = "c29tZXNhbHRzb21lc2FsdA", "7tP3RHbY2BOLfpzu8CkmDRJzqk3jNqWq4kTk6BFgQ2I"
	for _, tc := range []struct{ hash, err string }{
		{"", "want $argon2id$"},
		{"argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + sum + "$", "want $argon2id$"},
		{"$argon2id$v=19$m=19456,t=2,p=1$" + salt, "want $argon2id$"},
		{"$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + sum + "$x", "want $argon2id$"},
		{"$bcrypt$v=19$m=19456,t=2,p=1$" + salt + "$" + sum, "not argon2id"},
		{"$argon2id$v=16$m=19456,t=2,p=1$" + salt + "$" + sum, "v=19"},
		{"$argon2id$v=19$t=2,m=19456,p=1$" + salt + "$" + sum, "m=...,t=...,p=..."},
		{"$argon2id$v=19$m=19456,t=2$" + salt + "$" + sum, "m=...,t=...,p=..."},
		{"$argon2id$v=19$m=19456,t=2,p=1,k=3$" + salt + "$" + sum, "m=...,t=...,p=..."},
		{"$argon2id$v=19$m=+19456,t=2,p=1$" + salt + "$" + sum, "whole numbers"},
		{"$argon2id$v=19$m=19456,t=x,p=1$" + salt + "$" + sum, "whole numbers"},
		{"$argon2id$v=19$m=8388608,t=2,p=1$" + salt + "$" + sum, "m=8388608 out of range"},
		{"$argon2id$v=19$m=19456,t=0,p=1$" + salt + "$" + sum, "t=0 out of range"},
		{"$argon2id$v=19$m=19456,t=2,p=256$" + salt + "$" + sum, "p=256 out of range"},
		{"$argon2id$v=19$m=16,t=2,p=4$" + salt + "$" + sum, "below 8 KiB per lane"},
		{"$argon2id$v=19$m=19456,t=2,p=1$" + salt + "==$" + sum, "salt is not unpadded base64"},
		{"$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + sum[:42] + "J", "hash is not unpadded base64"}, // stray low bits
		{"$argon2id$v=19$m=19456,t=2,p=1$AAAA$" + sum, "salt shorter than 8 bytes"},
		{"$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$AAAAAAAA", "hash shorter than 16 bytes"},
	} {
		err := checkPHC(tc.hash)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("checkPHC(%q) = %v, want %q", tc.hash, err, tc.err)
		}
	}
}

// writeKeyPair writes a self-signed certificate and its key into dir.
func writeKeyPair(t *testing.T, dir, certName, keyName string, keyMode os.FileMode) (certPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "home.example.com"},
		DNSNames: []string{"home.example.com"}, NotBefore: time.Unix(0, 0), NotAfter: time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{certName, certPEM, 0o644}, {keyName, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), keyMode}} {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	return certPEM
}

// The tls: section: ACME (defaults, challenge resolution) or files.
func TestTLSSection(t *testing.T) {
	dir := t.TempDir()
	writeKeyPair(t, dir, "cert.pem", "key.pem", 0o600)
	writeKeyPair(t, dir, "open-cert.pem", "open-key.pem", 0o644)
	root := writeKeyPair(t, dir, "root.pem", "root-key.pem", 0o600)
	cfg := filepath.Join(dir, "a.yaml")
	const web = svcHead + "  - {name: web, kind: http, target: \"c:80\", port: 10443, allow: [any]}\n" + viewersAB // 7 lines
	cloudflare := "ddns: {hostname: home.example.com, provider: {type: cloudflare, zone: example.com, api_token: x}}\n"
	noip := "ddns: {hostname: home.example.com, provider: {type: noip, username: u, password: p}}\n"
	tests := []struct {
		name string
		yaml string
		want *TLS
		warn string
	}{
		{"acme with dns-01", web + cloudflare + "tls: {acme_email: me@example.com}\n",
			&TLS{ACMEEmail: "me@example.com", ACMECA: DefaultACMECA, Challenge: ChallengeDNS01}, ""},
		{"acme private CA", web + cloudflare + "tls:\n  acme_email: me@example.com\n  acme_ca: https://127.0.0.1:14000/dir\n  acme_ca_root: root.pem\n  challenge: TLS-ALPN-01\n",
			&TLS{ACMEEmail: "me@example.com", ACMECA: "https://127.0.0.1:14000/dir", ACMECARoot: filepath.Join(dir, "root.pem"), Challenge: ChallengeTLSALPN01},
			"a.yaml:13: tls.challenge: tls-alpn-01: the ACME server must reach this agent on public port 443, and no service uses port 443"},
		{"auto without TXT", web + noip + "tls: {acme_email: me@example.com}\n",
			&TLS{ACMEEmail: "me@example.com", ACMECA: DefaultACMECA, Challenge: ChallengeTLSALPN01},
			"a.yaml:9: tls.challenge: auto picks tls-alpn-01 (ddns provider noip can't write TXT records): the ACME server must reach"},
		{"auto without TXT, port 443 used", svcHead + "  - {name: web, kind: http, target: \"c:80\", port: 443, allow: [any]}\n" + viewersAB + noip + "tls: {acme_email: me@example.com}\n",
			&TLS{ACMEEmail: "me@example.com", ACMECA: DefaultACMECA, Challenge: ChallengeTLSALPN01}, ""},
		{"files", web + "tls: {cert_file: cert.pem, key_file: " + filepath.Join(dir, "key.pem") + "}\n",
			&TLS{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}, ""},
		{"files, key open", web + "tls:\n  cert_file: open-cert.pem\n  key_file: open-key.pem\n",
			&TLS{CertFile: filepath.Join(dir, "open-cert.pem"), KeyFile: filepath.Join(dir, "open-key.pem")},
			"a.yaml:10: tls.key_file: secret file " + filepath.Join(dir, "open-key.pem") + " is open to group or others (mode 0644)"},
		{"empty section", web + "tls:\n", nil, "a.yaml:4: services[0].kind: no certificate"},
		{"neither", web + "tls: {}\n", &TLS{}, "a.yaml:4: services[0].kind: no certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAgent(cfg, []byte(tt.yaml), envOf())
			checkErrs(t, err)
			if !reflect.DeepEqual(a.TLS, tt.want) {
				t.Errorf("TLS = %+v, want %+v", a.TLS, tt.want)
			}
			var warn []string
			if tt.warn != "" {
				warn = []string{tt.warn}
			}
			if len(a.Warnings) != len(warn) || len(warn) == 1 && !strings.HasPrefix(a.Warnings[0], filepath.Join(dir, warn[0])) {
				t.Errorf("warnings %q, want %q", a.Warnings, warn)
			}
		})
	}
	_ = root
}

func TestTLSErrors(t *testing.T) {
	dir := t.TempDir()
	writeKeyPair(t, dir, "cert.pem", "key.pem", 0o600)
	writeKeyPair(t, dir, "cert2.pem", "key2.pem", 0o600)
	if err := os.WriteFile(filepath.Join(dir, "junk.pem"), []byte("not pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "a.yaml")
	const web = svcHead + "  - {name: web, kind: http, target: \"c:80\", port: 10443, allow: [any]}\n" + viewersAB // 7 lines
	const noip = "ddns: {hostname: home.example.com, provider: {type: noip, username: u, password: p}}\n"          // line 8
	tests := []struct {
		name string
		yaml string
		want []want
	}{
		{"cert without key", web + "tls:\n  cert_file: cert.pem\n", []want{{9, "tls.key_file", "required with cert_file"}}},
		{"key without cert", web + "tls:\n  key_file: key.pem\n", []want{{9, "tls.cert_file", "required with key_file"}}},
		{"acme and files", web + noip + "tls:\n  acme_email: me@example.com\n  cert_file: cert.pem\n  key_file: key.pem\n",
			[]want{{11, "tls.cert_file", "set either acme_email (ACME) or cert_file and key_file, not both"}}},
		{"acme keys without acme_email", web + "tls:\n  acme_ca: https://acme.example/dir\n  acme_ca_root: x.pem\n  challenge: dns-01\n", []want{
			{9, "tls.acme_ca", "needs acme_email"}, {10, "tls.acme_ca_root", "needs acme_email"}, {11, "tls.challenge", "needs acme_email"}}},
		{"bad values", web + noip + "tls:\n  acme_email: Me <me@example.com>\n  acme_ca: http://acme.example/dir\n  acme_ca_root: junk.pem\n  challenge: http-01\n", []want{
			{10, "tls.acme_email", "expected an email address"},
			{11, "tls.acme_ca", "expected the ACME server's https:// directory URL"},
			{12, "tls.acme_ca_root", filepath.Join(dir, "junk.pem") + " holds no PEM certificate"},
			{13, "tls.challenge", `unknown challenge "http-01": use auto, dns-01, tls-alpn-01`}}},
		{"dns-01 without TXT", web + noip + "tls:\n  acme_email: me@example.com\n  challenge: dns-01\n",
			[]want{{11, "tls.challenge", "dns-01 needs a ddns provider that can write TXT records (cloudflare, rfc2136)"}}},
		{"acme without hostname", web + "tls:\n  acme_email: me@example.com\n", []want{{9, "tls.acme_email", "ACME needs ddns.hostname"}}},
		{"missing files", web + "tls: {cert_file: nope.pem, key_file: key.pem}\n",
			[]want{{8, "tls.cert_file", "cannot read " + filepath.Join(dir, "nope.pem") + ": no such file"}}},
		{"missing key", web + "tls: {cert_file: cert.pem, key_file: nope.pem}\n",
			[]want{{8, "tls.key_file", "cannot read " + filepath.Join(dir, "nope.pem") + ": no such file"}}},
		{"mismatched pair", web + "tls: {cert_file: cert.pem, key_file: key2.pem}\n",
			[]want{{8, "tls.cert_file", "don't load as a certificate and its key: private key does not match public key"}}},
		{"not a mapping", web + "tls: on\n", []want{{8, "tls", "expected a mapping"}}},
		{"unknown key", web + "tls: {acme_mail: me@example.com}\n", []want{{8, "", "unknown key tls.acme_mail (did you mean acme_email?)"}}},
		{"acme_ca with credentials", web + noip + "tls: {acme_email: me@example.com, acme_ca: \"https://u:sekrit@acme.example/dir\"}\n",
			[]want{{9, "tls.acme_ca", "expected the ACME server's https:// directory URL"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAgent(cfg, []byte(tt.yaml), envOf())
			checkErrs(t, err, tt.want...)
			if a != nil {
				t.Errorf("got a config along with errors")
			}
			if err != nil && strings.Contains(err.Error(), "sekrit") {
				t.Errorf("error shows a password:\n%v", err)
			}
		})
	}
}

// A tcp service open to anyone gets the secure default's warning, naming the
// service and the line; one limited to addresses, or an http one, does not.
func TestTCPAnyWarning(t *testing.T) {
	a, err := ParseAgent("a.yaml", []byte(svcHead+`  - name: cam
    target: 192.168.1.20:554
    port: 10554
    allow: [any]
  - {name: lan, target: "192.168.1.21:554", port: 10555, allow: [198.51.100.0/24]}
  - {name: web, kind: http, target: "192.168.1.20:80", port: 10443, allow: [any]}
`+viewersAB+cloudflareTLS), envOf())
	checkErrs(t, err)
	want := []string{"a.yaml:7: services[0].allow: service cam: anyone on the internet can try the camera's own login; use kind http/rtsp with viewers, or WireGuard"}
	if !reflect.DeepEqual(a.Warnings, want) {
		t.Errorf("warnings %q\nwant %q", a.Warnings, want)
	}
}

const cloudflareTLS = "ddns: {hostname: home.example.com, provider: {type: cloudflare, zone: example.com, api_token: x}}\ntls: {acme_email: me@example.com}\n"

// camera_login's password comes from password_file like every secret, with
// the same warning when others can read the file.
func TestCameraLoginFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "cam.pass")
	if err := os.WriteFile(p, []byte("cam-file-secret\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	a, err := ParseAgent(filepath.Join(dir, "a.yaml"), []byte(svcHead+`  - name: web
    kind: http
    target: 192.168.1.20:80
    port: 10443
    allow: [any]
    camera_login:
      username: admin
      password_file: cam.pass
`+viewersAB+cloudflareTLS), envOf())
	checkErrs(t, err)
	if c := a.Services[0].CameraLogin; c == nil || *c != (CameraLogin{"admin", "cam-file-secret"}) {
		t.Errorf("camera_login = %v", c)
	}
	if len(a.Warnings) != 1 || !strings.HasPrefix(a.Warnings[0], filepath.Join(dir, "a.yaml")+":11: services[0].camera_login.password_file: secret file "+p+" is open to group or others (mode 0640)") ||
		strings.Contains(a.Warnings[0], "cam-file-secret") {
		t.Errorf("warnings %q", a.Warnings)
	}
}

func TestMJPEGAndSnapshotPaths(t *testing.T) {
	a, err := ParseAgent("a.yaml", []byte(svcHead+"  - name: a\n    kind: http\n    target: \"c:80\"\n    port: 10443\n    allow: [any]\n    mjpeg: /video.mjpg\n    snapshot: /snap.jpg\n"+viewersAB), envOf())
	if err != nil {
		t.Fatal(err)
	}
	if s := a.Services[0]; s.MJPEG != "/video.mjpg" || s.Snapshot != "/snap.jpg" {
		t.Errorf("mjpeg %q snapshot %q", s.MJPEG, s.Snapshot)
	}
}
