package discover

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
)

const sampleProbeMatches = `<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"><SOAP-ENV:Header><wsa:RelatesTo>urn:uuid:1</wsa:RelatesTo></SOAP-ENV:Header><SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch><wsa:EndpointReference><wsa:Address>urn:uuid:2</wsa:Address></wsa:EndpointReference><d:Types>dn:NetworkVideoTransmitter</d:Types><d:Scopes>onvif://www.onvif.org/name/Front%20Door onvif://www.onvif.org/hardware/X</d:Scopes><d:XAddrs>http://192.168.1.20/onvif/device_service ftp://x/ http://[fe80::1]/</d:XAddrs></d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>`

func TestDecodeProbeMatches(t *testing.T) {
	rel, ms, err := decodeProbeMatches([]byte(sampleProbeMatches))
	if err != nil || rel != "urn:uuid:1" || len(ms) != 1 {
		t.Fatalf("%q %+v %v", rel, ms, err)
	}
	m := ms[0]
	if m.Endpoint != "urn:uuid:2" || len(m.XAddrs) != 2 || m.XAddrs[0] != "http://192.168.1.20/onvif/device_service" {
		t.Errorf("%+v", m)
	}
	if scopeValue(m.Scopes, "name") != "Front Door" || scopeValue(m.Scopes, "hardware") != "X" || scopeValue(m.Scopes, "location") != "" {
		t.Errorf("scopes %q", m.Scopes)
	}
}

func FuzzDecodeProbeMatches(f *testing.F) {
	f.Add([]byte(sampleProbeMatches))
	f.Add([]byte(`<a><Body><ProbeMatches><ProbeMatch/></ProbeMatches></Body></a>`))
	f.Add([]byte(`<`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rel, ms, err := decodeProbeMatches(b)
		if err != nil {
			return
		}
		if len(ms) > maxMatchesPerAnswer || len(rel) > maxFieldLen {
			t.Fatalf("kept %d matches, relatesTo of %d bytes", len(ms), len(rel))
		}
		for _, m := range ms {
			if len(m.Scopes) > maxScopes || len(m.Types) > maxScopes || len(m.XAddrs) > maxXAddrs || len(m.Endpoint) > maxFieldLen {
				t.Fatalf("unbounded match %+v", m)
			}
		}
	})
}

const sampleProfiles = `<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema"><env:Body><trt:GetProfilesResponse><trt:Profiles token="P1"><tt:Name>main</tt:Name><tt:VideoEncoderConfiguration><tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>1280</tt:Width><tt:Height>720</tt:Height></tt:Resolution></tt:VideoEncoderConfiguration></trt:Profiles></trt:GetProfilesResponse></env:Body></env:Envelope>`

const sampleFault = `<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:ter="http://www.onvif.org/ver10/error"><env:Body><env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>ter:NotAuthorized</env:Value></env:Subcode></env:Code><env:Reason><env:Text>Sender not Authorized</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>`

func FuzzDecodeSOAP(f *testing.F) {
	f.Add([]byte(sampleProfiles))
	f.Add([]byte(sampleFault))
	f.Add([]byte(`<E><Body><GetStreamUriResponse><MediaUri><Uri>rtsp://1.2.3.4/x</Uri></MediaUri></GetStreamUriResponse></Body></E>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r struct {
			Profiles []struct {
				Token string `xml:"token,attr"`
				Width string `xml:"VideoEncoderConfiguration>Resolution>Width"`
			} `xml:"Body>GetProfilesResponse>Profiles"`
			URI string `xml:"Body>GetStreamUriResponse>MediaUri>Uri"`
		}
		err := decodeSOAP(b, &r)
		if fe, ok := err.(*FaultError); ok {
			if len(fe.Code) > maxFieldLen || len(fe.Subcode) > maxFieldLen || len(fe.Reason) > maxFieldLen {
				t.Fatalf("unbounded fault %d %d %d", len(fe.Code), len(fe.Subcode), len(fe.Reason))
			}
			_ = fe.Error()
		}
	})
}

func TestDecodeSOAPFault(t *testing.T) {
	var r struct{}
	err := decodeSOAP([]byte(sampleFault), &r)
	if fe, ok := err.(*FaultError); !ok || fe.Subcode != "ter:NotAuthorized" || fe.Unwrap() != ErrNotAuthorized {
		t.Fatalf("%#v", err)
	}
}

func FuzzReadHeader(f *testing.F) {
	f.Add([]byte("RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: x\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"a\\\"b\", nonce=1\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		status, hdr, err := readHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(status) > maxFieldLen {
			t.Fatalf("status of %d bytes", len(status))
		}
		var pp PortProbe
		fillHeaders(&pp, hdr)
		if len(pp.Realm) > 203 || len(pp.Server) > 203 || len(pp.Auth) > 23 {
			t.Fatalf("unbounded %+v", pp)
		}
	})
}

func TestAuthParam(t *testing.T) {
	for ch, want := range map[string]string{
		`Digest realm="IP Camera(12345)", nonce="x"`: "IP Camera(12345)",
		`Basic realm=cam`:               "cam",
		`Digest realm="a\"b", qop=auth`: `a"b`,
		`Digest realm="unterminated`:    "unterminated",
		`Digest nonce=1`:                "",
	} {
		if got := authParam(ch, "realm"); got != want {
			t.Errorf("authParam(%q) = %q, want %q", ch, got, want)
		}
	}
}

func TestScrubURI(t *testing.T) {
	for in, want := range map[string]string{
		"rtsp://admin:pw123@192.168.1.20:554/live":          "rtsp://192.168.1.20:554/live",
		"http://192.168.1.20/snap.cgi?user=admin&pwd=pw123": "http://192.168.1.20/snap.cgi?user=admin&pwd=PASSWORD",
		"rtsp://192.168.1.20/live":                          "rtsp://192.168.1.20/live",
	} {
		if got := scrubURI(in, "pw123"); got != want || strings.Contains(got, "pw123") {
			t.Errorf("scrubURI(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDeviceURL(t *testing.T) {
	d := newDiscoverer(Config{})
	host := netip.MustParseAddr("192.168.1.20")
	for _, tc := range []struct {
		xaddrs  []string
		want    string
		problem string
	}{
		{[]string{"https://192.168.1.20/onvif/device_service", "http://192.168.1.20/onvif/device_service"}, "http://192.168.1.20/onvif/device_service", ""},
		{[]string{"http://192.168.2.20/onvif/device_service"}, "http://192.168.2.20/onvif/device_service", "names http://192.168.2.20/onvif/device_service as its ONVIF address: using it"},
		{[]string{"http://198.51.100.7/onvif/device_service"}, "", "not on the LAN: ignored"},
		{[]string{"http://camera.local/onvif/device_service"}, "", "not on the LAN: ignored"},
		{nil, "", "named no ONVIF address"},
	} {
		cam := &Camera{Host: host.String(), ProbeMatch: ProbeMatch{XAddrs: tc.xaddrs}}
		got := d.deviceURL(cam, host)
		if got != tc.want || tc.problem == "" && len(cam.Problems) > 0 ||
			tc.problem != "" && (len(cam.Problems) != 1 || !strings.Contains(cam.Problems[0], tc.problem)) {
			t.Errorf("%q: %q %q, want %q %q", tc.xaddrs, got, cam.Problems, tc.want, tc.problem)
		}
	}
}

func TestPickInterfaces(t *testing.T) {
	up := net.FlagUp | net.FlagMulticast
	cands := []candidate{
		{net.Interface{Name: "lo", Flags: up | net.FlagLoopback}, []netip.Addr{netip.MustParseAddr("127.0.0.1")}},
		{net.Interface{Name: "eth0", Flags: up}, []netip.Addr{netip.MustParseAddr("fe80::1"), netip.MustParseAddr("192.168.1.10")}},
		{net.Interface{Name: "wan", Flags: up}, []netip.Addr{netip.MustParseAddr("203.0.113.5")}},
		{net.Interface{Name: "wg0", Flags: net.FlagUp}, []netip.Addr{netip.MustParseAddr("10.77.0.1")}},
		{net.Interface{Name: "eth1", Flags: net.FlagMulticast}, []netip.Addr{netip.MustParseAddr("10.0.0.2")}},
		{net.Interface{Name: "v6", Flags: up}, []netip.Addr{netip.MustParseAddr("fd00::1")}},
	}
	for _, tc := range []struct {
		names []string
		want  string
		err   string
	}{
		{nil, "eth0=192.168.1.10", ""},
		{[]string{"wan"}, "wan=203.0.113.5", ""},
		{[]string{"eth0", "wan"}, "eth0=192.168.1.10 wan=203.0.113.5", ""},
		{[]string{"wg0"}, "", "cannot send multicast"},
		{[]string{"eth1"}, "", "is down"},
		{[]string{"v6"}, "", "no IPv4 address"},
		{[]string{"nope"}, "", `no interface "nope" (there are: lo, eth0, wan, wg0, eth1, v6)`},
	} {
		got, err := pickInterfaces(cands, tc.names)
		var s []string
		for _, i := range got {
			s = append(s, i.Name+"="+i.addr.String())
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrNoInterface) {
				t.Errorf("%q: %v, want error %q", tc.names, err, tc.err)
			}
		} else if err != nil || strings.Join(s, " ") != tc.want {
			t.Errorf("%q: %q %v, want %q", tc.names, s, err, tc.want)
		}
	}
	if _, err := pickInterfaces(cands[2:3], nil); err == nil || !strings.Contains(err.Error(), "no interface is up with a private IPv4 address") {
		t.Errorf("only a public interface: %v", err)
	}
}
