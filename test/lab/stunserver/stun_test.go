package main

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"
)

// parseMapped decodes the XOR-MAPPED-ADDRESS and MAPPED-ADDRESS of a Binding
// success response, the way a client such as miniupnpd reads it.
func parseMapped(t *testing.T, resp []byte) (xor, plain netip.AddrPort) {
	t.Helper()
	if len(resp) < headerLen {
		t.Fatalf("response of %d bytes", len(resp))
	}
	if typ := binary.BigEndian.Uint16(resp[0:2]); typ != bindingSuccess {
		t.Fatalf("response type %#04x", typ)
	}
	n := int(binary.BigEndian.Uint16(resp[2:4]))
	if n != len(resp)-headerLen {
		t.Fatalf("length field %d, body %d", n, len(resp)-headerLen)
	}
	var key [16]byte
	binary.BigEndian.PutUint32(key[0:4], magicCookie)
	copy(key[4:], resp[8:20])
	body := resp[headerLen:]
	for len(body) >= 4 {
		typ := binary.BigEndian.Uint16(body[0:2])
		l := int(binary.BigEndian.Uint16(body[2:4]))
		v := body[4 : 4+l]
		port := binary.BigEndian.Uint16(v[2:4])
		ip := bytes.Clone(v[4:])
		switch typ {
		case attrMapped:
			a, _ := netip.AddrFromSlice(ip)
			plain = netip.AddrPortFrom(a, port)
		case attrXORMapped:
			for i := range ip {
				ip[i] ^= key[i]
			}
			a, _ := netip.AddrFromSlice(ip)
			xor = netip.AddrPortFrom(a, port^uint16(magicCookie>>16))
		}
		body = body[4+(l+3)/4*4:]
	}
	return xor, plain
}

// miniupnpdRequest is a Binding Request as miniupnpd 2.3.1 sends it with a
// CHANGE-REQUEST (change IP and port) attribute.
const miniupnpdRequest = "000100082112a442" + "0102030405060708090a0b0c" + "0003000400000006"

func TestRespond(t *testing.T) {
	req, _ := hex.DecodeString(miniupnpdRequest)
	for _, from := range []netip.AddrPort{
		netip.MustParseAddrPort("203.0.113.2:40000"),
		netip.MustParseAddrPort("[::ffff:203.0.113.2]:1"),
		netip.MustParseAddrPort("[2001:db8::1]:3478"),
	} {
		resp, err := respond(req, from)
		if err != nil {
			t.Fatalf("respond from %s: %v", from, err)
		}
		if !bytes.Equal(resp[4:20], req[4:20]) {
			t.Errorf("cookie/transaction ID not echoed: % x", resp[4:20])
		}
		want := netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		xor, plain := parseMapped(t, resp)
		if xor != want || plain != want {
			t.Errorf("from %s: xor-mapped %s, mapped %s, want %s", from, xor, plain, want)
		}
	}
}

func TestRespondRejects(t *testing.T) {
	from := netip.MustParseAddrPort("203.0.113.2:40000")
	valid, _ := hex.DecodeString(miniupnpdRequest)
	for _, tc := range []struct {
		name string
		req  []byte
		want error
	}{
		{"empty", nil, ErrNotSTUN},
		{"short", valid[:19], ErrNotSTUN},
		{"top bits", append([]byte{0x40}, valid[1:]...), ErrNotSTUN},
		{"length past end", append(bytes.Clone(valid[:2]), append([]byte{0, 12}, valid[4:]...)...), ErrNotSTUN},
		{"unaligned length", append(bytes.Clone(valid[:2]), append([]byte{0, 6}, valid[4:]...)...), ErrNotSTUN},
		{"binding response", append([]byte{0x01, 0x01}, valid[2:]...), ErrNotBinding},
		{"huge", make([]byte, maxRequestBytes+1), ErrNotSTUN},
	} {
		if _, err := respond(tc.req, from); !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := respond(valid, netip.AddrPort{}); !errors.Is(err, ErrNotSTUN) {
		t.Errorf("zero source: err %v", err)
	}
}

func FuzzRespond(f *testing.F) {
	req, _ := hex.DecodeString(miniupnpdRequest)
	f.Add(req, []byte{203, 0, 113, 2}, uint16(40000))
	f.Add(req[:20], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(1))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n\x00\x00"), []byte{127, 0, 0, 1}, uint16(80))
	f.Fuzz(func(t *testing.T, req, ip []byte, port uint16) {
		addr, ok := netip.AddrFromSlice(ip)
		if !ok {
			return
		}
		from := netip.AddrPortFrom(addr, port)
		resp, err := respond(req, from)
		if err != nil {
			if !errors.Is(err, ErrNotSTUN) && !errors.Is(err, ErrNotBinding) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		want := netip.AddrPortFrom(addr.Unmap(), port)
		if xor, plain := parseMapped(t, resp); xor != want || plain != want {
			t.Fatalf("xor-mapped %s, mapped %s, want %s", xor, plain, want)
		}
	})
}
