package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// STUN message layout (RFC 5389 section 6): type(2) length(2) cookie(4)
// transaction ID(12), then TLV attributes padded to 4 bytes.
const (
	headerLen       = 20
	magicCookie     = 0x2112A442
	bindingRequest  = 0x0001
	bindingSuccess  = 0x0101
	attrMapped      = 0x0001
	attrXORMapped   = 0x0020
	familyIPv4      = 0x01
	familyIPv6      = 0x02
	maxRequestBytes = 2048
)

var (
	// ErrNotSTUN means the datagram is not a well-formed STUN message.
	ErrNotSTUN = errors.New("not a stun message")
	// ErrNotBinding means a STUN message other than a Binding Request.
	ErrNotBinding = errors.New("not a binding request")
)

// respond builds the Binding success response for req, received from from.
// CHANGE-REQUEST attributes are ignored on purpose: the answer always comes
// from the one listening address (see the package doc).
func respond(req []byte, from netip.AddrPort) ([]byte, error) {
	if len(req) < headerLen || len(req) > maxRequestBytes {
		return nil, fmt.Errorf("%d bytes: %w", len(req), ErrNotSTUN)
	}
	typ := binary.BigEndian.Uint16(req[0:2])
	if typ&0xC000 != 0 { // the two top bits of every STUN message are zero
		return nil, fmt.Errorf("type %#04x: %w", typ, ErrNotSTUN)
	}
	if n := int(binary.BigEndian.Uint16(req[2:4])); n > len(req)-headerLen || n%4 != 0 {
		return nil, fmt.Errorf("length %d of %d: %w", n, len(req)-headerLen, ErrNotSTUN)
	}
	if typ != bindingRequest {
		return nil, fmt.Errorf("type %#04x: %w", typ, ErrNotBinding)
	}
	if !from.IsValid() {
		return nil, fmt.Errorf("no source address: %w", ErrNotSTUN)
	}
	ip := from.Addr().Unmap()
	port := from.Port()
	tid := req[8:20]

	var body []byte
	body = appendAttr(body, attrMapped, addrValue(ip, port))
	xport := port ^ uint16(magicCookie>>16)
	xip := ip.AsSlice()
	var key [16]byte
	binary.BigEndian.PutUint32(key[0:4], magicCookie)
	copy(key[4:], tid)
	for i := range xip {
		xip[i] ^= key[i]
	}
	xaddr, _ := netip.AddrFromSlice(xip)
	body = appendAttr(body, attrXORMapped, addrValue(xaddr, xport))

	resp := make([]byte, headerLen, headerLen+len(body))
	binary.BigEndian.PutUint16(resp[0:2], bindingSuccess)
	binary.BigEndian.PutUint16(resp[2:4], uint16(len(body)))
	copy(resp[4:20], req[4:20]) // cookie as sent (RFC 3489 clients send none) and transaction ID
	return append(resp, body...), nil
}

// addrValue encodes a (XOR-)MAPPED-ADDRESS value: 0, family, port, address.
func addrValue(ip netip.Addr, port uint16) []byte {
	fam := byte(familyIPv4)
	if ip.Is6() {
		fam = familyIPv6
	}
	v := []byte{0, fam, byte(port >> 8), byte(port)}
	return append(v, ip.AsSlice()...)
}

func appendAttr(b []byte, typ uint16, v []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	b = append(b, v...)
	return append(b, make([]byte, (4-len(v)%4)%4)...)
}
