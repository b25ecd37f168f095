package portmap

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func natpmpReply(op uint8, result uint16, epoch uint32, body ...byte) []byte {
	b := make([]byte, 8)
	b[1] = 128 + op
	binary.BigEndian.PutUint16(b[2:4], result)
	binary.BigEndian.PutUint32(b[4:8], epoch)
	return append(b, body...)
}

func TestParseNATPMPResponse(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    natpmpResponse
		wantErr bool
	}{
		{"address", natpmpReply(0, 0, 77, 203, 0, 113, 2), natpmpResponse{Op: 0, Epoch: 77, ExternalAddr: netip.MustParseAddr("203.0.113.2")}, false},
		{"map tcp", natpmpReply(2, 0, 5, 0x21, 0x6a, 0x29, 0x3a, 0, 0, 0x0e, 0x10), natpmpResponse{Op: 2, Epoch: 5, InternalPort: 8554, ExternalPort: 10554, Lifetime: 3600}, false},
		{"error header only", natpmpReply(1, 3, 9), natpmpResponse{Op: 1, Result: 3, Epoch: 9}, false},
		{"short", []byte{0, 128, 0}, natpmpResponse{}, true},
		{"version 2", append([]byte{2}, natpmpReply(0, 0, 0, 1, 2, 3, 4)[1:]...), natpmpResponse{}, true},
		{"request opcode", []byte{0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, natpmpResponse{}, true},
		{"truncated success", natpmpReply(2, 0, 5, 1, 2), natpmpResponse{}, true},
		{"unknown opcode", natpmpReply(7, 0, 5, 1, 2, 3, 4, 5, 6, 7, 8), natpmpResponse{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseNATPMPResponse(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Errorf("err %v is not ErrMalformed", err)
				}
				return
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func pcpMapReply(result uint8, lifetime, epoch uint32, nonce [12]byte, proto uint8, internal, external uint16, addr netip.Addr) []byte {
	b := make([]byte, 60)
	b[0], b[1], b[3] = 2, 0x81, result
	binary.BigEndian.PutUint32(b[4:8], lifetime)
	binary.BigEndian.PutUint32(b[8:12], epoch)
	copy(b[24:36], nonce[:])
	b[36] = proto
	binary.BigEndian.PutUint16(b[40:42], internal)
	binary.BigEndian.PutUint16(b[42:44], external)
	a := addr.As16()
	copy(b[44:60], a[:])
	return b
}

func TestParsePCPResponse(t *testing.T) {
	nonce := [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	ext := netip.MustParseAddr("203.0.113.2")
	ok := pcpMapReply(0, 3600, 17, nonce, 6, 8554, 10554, ext)
	got, err := parsePCPResponse(ok)
	if err != nil {
		t.Fatal(err)
	}
	want := pcpResponse{Opcode: 1, Lifetime: 3600, Epoch: 17, HasMap: true, Nonce: nonce, Protocol: 6, InternalPort: 8554, ExternalPort: 10554, ExternalAddr: ext}
	if got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}

	// A refusal still parses; its address field is there but must not be trusted by callers.
	got, err = parsePCPResponse(pcpMapReply(8, 30, 1, nonce, 6, 8554, 0, netip.MustParseAddr("100.64.0.2")))
	if err != nil || got.Result != 8 || got.Lifetime != 30 {
		t.Errorf("NO_RESOURCES reply: %+v, %v", got, err)
	}

	announce := make([]byte, 24)
	announce[0], announce[1] = 2, 0x80
	if got, err := parsePCPResponse(announce); err != nil || got.Opcode != 0 || got.HasMap {
		t.Errorf("announce: %+v %v", got, err)
	}

	// A NAT-PMP server's "unsupported version" answer to a PCP request.
	if _, err := parsePCPResponse([]byte{0, 129, 0, 1, 0, 0, 0, 5}); !errors.Is(err, ErrNotSupported) {
		t.Errorf("NAT-PMP reply: err = %v, want ErrNotSupported", err)
	}

	bad := map[string][]byte{
		"short":             make([]byte, 20),
		"not multiple of 4": append(append([]byte(nil), announce...), 0, 0),
		"version 1":         append([]byte{1}, announce[1:]...),
		"request":           append([]byte{2, 0}, announce[2:]...),
		"short map ok":      ok[:40],
		"too long":          append(append([]byte(nil), ok...), make([]byte, 1100)...),
	}
	for name, b := range bad {
		if _, err := parsePCPResponse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func TestPCPRequestLayout(t *testing.T) {
	nonce := [12]byte{9, 9, 9}
	b := pcpRequest(pcpOpMap, 7200, netip.MustParseAddr("192.168.77.10"), nonce, pcpProtoTCP, 8554, 10554)
	if len(b) != 60 || b[0] != 2 || b[1] != 1 {
		t.Fatalf("header: % x", b[:4])
	}
	if got := binary.BigEndian.Uint32(b[4:8]); got != 7200 {
		t.Errorf("lifetime %d", got)
	}
	if got := netip.AddrFrom16([16]byte(b[8:24])); got.String() != "::ffff:192.168.77.10" {
		t.Errorf("client address %s", got)
	}
	if b[36] != 6 || binary.BigEndian.Uint16(b[40:42]) != 8554 || binary.BigEndian.Uint16(b[42:44]) != 10554 {
		t.Errorf("payload % x", b[24:])
	}
	if got := netip.AddrFrom16([16]byte(b[44:60])); got.String() != "::ffff:0.0.0.0" {
		t.Errorf("suggested address %s", got)
	}
}

func TestParseSSDPResponse(t *testing.T) {
	in := "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
		"USN: uuid:x::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\nSERVER: Debian/6.18 UPnP/1.1 MiniUPnPd/2.3.1\r\n" +
		"location: http://192.168.77.1:5000/rootDesc.xml\r\nBOOTID.UPNP.ORG: 7\r\n\r\n"
	r, err := parseSSDPResponse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if r.Location.String() != "http://192.168.77.1:5000/rootDesc.xml" || r.BootID != "7" || !strings.Contains(r.Server, "MiniUPnPd") ||
		r.ST != "urn:schemas-upnp-org:device:InternetGatewayDevice:1" {
		t.Errorf("parsed %+v", r)
	}
	for name, s := range map[string]string{
		"notify":      "NOTIFY * HTTP/1.1\r\nLOCATION: http://192.168.1.1/\r\n\r\n",
		"404":         "HTTP/1.1 404 Not Found\r\nLOCATION: http://192.168.1.1/\r\n\r\n",
		"no location": "HTTP/1.1 200 OK\r\nST: x\r\n\r\n",
		"file URL":    "HTTP/1.1 200 OK\r\nLOCATION: file:///etc/passwd\r\n\r\n",
		"no host":     "HTTP/1.1 200 OK\r\nLOCATION: http:///x\r\n\r\n",
		"userinfo":    "HTTP/1.1 200 OK\r\nLOCATION: http://u:p@192.168.1.1/\r\n\r\n",
		"empty":       "",
		"bad URL":     "HTTP/1.1 200 OK\r\nLOCATION: http://[::1\r\n\r\n",
	} {
		if _, err := parseSSDPResponse([]byte(s)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func TestAcceptLocation(t *testing.T) {
	gw := netip.MustParseAddr("192.168.77.1")
	from := netip.MustParseAddr("192.168.77.1")
	for loc, want := range map[string]bool{
		"http://192.168.77.1:5000/rootDesc.xml": true,
		"http://10.0.0.1/desc.xml":              true, // another LAN address
		"http://127.0.0.1:1234/":                true,
		"http://198.51.100.7/desc.xml":          false, // a public host named by some device
		"http://router.example/desc.xml":        false,
	} {
		r, err := parseSSDPResponse([]byte("HTTP/1.1 200 OK\r\nLOCATION: " + loc + "\r\n\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		if got := acceptLocation(r.Location, from, gw); got != want {
			t.Errorf("%s: accept = %v, want %v", loc, got, want)
		}
	}
}

func TestEpochTracker(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var e epochTracker
	if e.observe(100, t0) {
		t.Fatal("first observation is never a reset")
	}
	if e.observe(160, t0.Add(60*time.Second)) || e.take() {
		t.Fatal("epoch advancing with the clock is not a reset")
	}
	if !e.observe(3, t0.Add(120*time.Second)) || !e.take() {
		t.Fatal("epoch going back is a reset")
	}
	if e.take() {
		t.Fatal("take clears")
	}
	// Epoch stuck while 60 s pass: the router restarted and counts from 0 again.
	var f epochTracker
	f.observe(0, t0)
	if !f.observe(0, t0.Add(60*time.Second)) {
		t.Fatal("epoch not advancing over 60 s is a reset")
	}
}

func TestLooksLikeDockerBridge(t *testing.T) {
	for _, tt := range []struct {
		gw        string
		ifName    string
		container bool
		want      bool
	}{
		{"172.17.0.1", "eth0", false, true},
		{"192.168.1.1", "docker0", false, true},
		{"172.18.0.1", "br-3f2a1b", false, true},
		{"192.168.1.1", "eth0", true, true},
		{"192.168.1.1", "eth0", false, false},
		{"172.16.5.1", "wlan0", false, false},
	} {
		if got := looksLikeDockerBridge(netip.MustParseAddr(tt.gw), tt.ifName, tt.container); got != tt.want {
			t.Errorf("%+v: got %v", tt, got)
		}
	}
}

func TestErrorsIs(t *testing.T) {
	if !errors.Is(&NATPMPError{Code: 5}, ErrNotSupported) || errors.Is(&NATPMPError{Code: 3}, ErrNotSupported) {
		t.Error("NATPMPError.Is")
	}
	if !errors.Is(&PCPError{Code: 1}, ErrNotSupported) || errors.Is(&PCPError{Code: 8}, ErrNotSupported) {
		t.Error("PCPError.Is")
	}
	if !errors.Is(&UPnPError{Code: 401}, ErrNotSupported) || errors.Is(&UPnPError{Code: 718}, ErrNotSupported) {
		t.Error("UPnPError.Is")
	}
	if s := (&UPnPError{Action: "AddPortMapping", Code: 718, Desc: "ConflictInMappingEntry"}).Error(); !strings.Contains(s, "718") || !strings.Contains(s, "another device") {
		t.Errorf("UPnPError text %q", s)
	}
}

func FuzzParseNATPMPResponse(f *testing.F) {
	f.Add(natpmpReply(0, 0, 77, 203, 0, 113, 2))
	f.Add(natpmpReply(2, 0, 5, 0x21, 0x6a, 0x29, 0x3a, 0, 0, 0x0e, 0x10))
	f.Add(natpmpReply(1, 3, 9))
	f.Add([]byte{0, 128})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseNATPMPResponse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if len(b) < 8 || b[0] != 0 || b[1] != 128+r.Op {
			t.Fatalf("accepted %x as %+v", b, r)
		}
		if r.Result == 0 && r.Op == 0 && !r.ExternalAddr.Is4() {
			t.Fatalf("address reply without IPv4 address: %+v", r)
		}
	})
}

func FuzzParsePCPResponse(f *testing.F) {
	ext := netip.MustParseAddr("203.0.113.2")
	f.Add(pcpMapReply(0, 3600, 17, [12]byte{1}, 6, 8554, 10554, ext))
	f.Add(pcpMapReply(8, 30, 1, [12]byte{2}, 17, 51820, 0, netip.MustParseAddr("100.64.0.2")))
	f.Add(append([]byte{2, 0x80}, make([]byte, 22)...))
	f.Add([]byte{0, 129, 0, 1, 0, 0, 0, 5})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parsePCPResponse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotSupported) {
				t.Fatalf("error %v is neither ErrMalformed nor ErrNotSupported", err)
			}
			return
		}
		if len(b) < 24 || len(b)%4 != 0 || b[0] != 2 || b[1]&0x80 == 0 {
			t.Fatalf("accepted %x", b)
		}
		if r.HasMap && len(b) < 60 {
			t.Fatalf("map payload from %d bytes", len(b))
		}
		if r.Result == 0 && r.Opcode == pcpOpMap && !r.HasMap {
			t.Fatalf("successful MAP without payload")
		}
	})
}

func FuzzParseSSDPResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://192.168.77.1:5000/rootDesc.xml\r\nBOOTID.UPNP.ORG: 7\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 200 OK\nLocation: http://10.0.0.138:80/IGD.xml\n\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nLOCATION: file:///etc/passwd\r\n\r\n"))
	f.Add([]byte("NOTIFY * HTTP/1.1\r\n\r\n"))
	gw := netip.MustParseAddr("192.168.1.1")
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseSSDPResponse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if r.Location == nil || r.Location.Scheme != "http" || r.Location.Hostname() == "" {
			t.Fatalf("accepted LOCATION %v", r.Location)
		}
		if acceptLocation(r.Location, gw, gw) {
			a := netip.MustParseAddr(r.Location.Hostname()).Unmap()
			if !(a == gw || a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast()) {
				t.Fatalf("accepted non-local host %s", a)
			}
		}
	})
}
