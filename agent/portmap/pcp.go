package portmap

// A small PCP client (RFC 6887): ANNOUNCE to probe and to check the epoch,
// MAP to create, renew and delete mappings. Each mapping keeps its nonce for
// its whole life (and across runs, in the state file): routers such as
// miniupnpd refuse to renew or delete a mapping with another nonce.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

const (
	pcpVersion       = 2
	pcpOpAnnounce    = 0
	pcpOpMap         = 1
	pcpReplyBit      = 0x80
	pcpHeaderLen     = 24
	pcpMapPayloadLen = 36
	pcpProtoTCP      = 6
	pcpProtoUDP      = 17
)

// pcpResponse is a parsed PCP reply.
type pcpResponse struct {
	Opcode   uint8
	Result   uint8
	Lifetime uint32
	Epoch    uint32
	// MAP payload, when present.
	HasMap       bool
	Nonce        [12]byte
	Protocol     uint8
	InternalPort uint16
	ExternalPort uint16
	ExternalAddr netip.Addr // only meaningful when Result is 0 (routers fill it even on failure)
}

// errPCPGotNATPMP marks a NAT-PMP-only server answering our PCP request.
var errPCPGotNATPMP = &PCPError{Code: 1}

// parsePCPResponse parses a PCP reply (RFC 6887 7.2, 11.1). A reply with
// version 0 is a NAT-PMP server saying it does not speak PCP.
func parsePCPResponse(b []byte) (pcpResponse, error) {
	var r pcpResponse
	if len(b) >= 4 && b[0] == natpmpVersion && b[1] >= natpmpReplyBit {
		return r, errPCPGotNATPMP
	}
	if len(b) < pcpHeaderLen || len(b) > maxReply || len(b)%4 != 0 {
		return r, fmt.Errorf("PCP reply of %d bytes: %w", len(b), ErrMalformed)
	}
	if b[0] != pcpVersion {
		return r, fmt.Errorf("PCP reply version %d: %w", b[0], ErrMalformed)
	}
	if b[1]&pcpReplyBit == 0 {
		return r, fmt.Errorf("PCP message is a request: %w", ErrMalformed)
	}
	r.Opcode = b[1] &^ pcpReplyBit
	r.Result = b[3]
	r.Lifetime = binary.BigEndian.Uint32(b[4:8])
	r.Epoch = binary.BigEndian.Uint32(b[8:12])
	if r.Opcode == pcpOpMap {
		if len(b) < pcpHeaderLen+pcpMapPayloadLen {
			if r.Result == 0 {
				return r, fmt.Errorf("PCP MAP reply of %d bytes: %w", len(b), ErrMalformed)
			}
			return r, nil
		}
		p := b[pcpHeaderLen:]
		r.HasMap = true
		copy(r.Nonce[:], p[0:12])
		r.Protocol = p[12]
		r.InternalPort = binary.BigEndian.Uint16(p[16:18])
		r.ExternalPort = binary.BigEndian.Uint16(p[18:20])
		r.ExternalAddr = netip.AddrFrom16([16]byte(p[20:36])).Unmap()
	}
	return r, nil
}

// pcpRequest builds a request header (and MAP payload when opcode is MAP).
func pcpRequest(op uint8, lifetime uint32, client netip.Addr, nonce [12]byte, proto uint8, internal, external uint16) []byte {
	n := pcpHeaderLen
	if op == pcpOpMap {
		n += pcpMapPayloadLen
	}
	b := make([]byte, n)
	b[0], b[1] = pcpVersion, op
	binary.BigEndian.PutUint32(b[4:8], lifetime)
	c := client.As16() // IPv4 becomes IPv4-mapped, as the RFC wants
	copy(b[8:24], c[:])
	if op == pcpOpMap {
		p := b[pcpHeaderLen:]
		copy(p[0:12], nonce[:])
		p[12] = proto
		binary.BigEndian.PutUint16(p[16:18], internal)
		binary.BigEndian.PutUint16(p[18:20], external)
		// Suggested external address: ::ffff:0.0.0.0 ("any IPv4").
		p[30], p[31] = 0xff, 0xff
	}
	return b
}

func pcpProto(proto string) uint8 {
	if proto == "udp" {
		return pcpProtoUDP
	}
	return pcpProtoTCP
}

// pcpMapper maps ports with PCP. Used by the Run goroutine only.
type pcpMapper struct {
	server netip.AddrPort
	client netip.Addr // our address as the router sees it on the LAN
	clock  Clock
	epoch  epochTracker
}

func (p *pcpMapper) name() string { return "pcp" }

func (p *pcpMapper) do(ctx context.Context, req []byte) (pcpResponse, error) {
	var resp pcpResponse
	var parseErr error
	_, err := exchange(ctx, p.server, req, func(b []byte) bool {
		r, err := parsePCPResponse(b)
		if err == errPCPGotNATPMP {
			parseErr = err
			return true
		}
		if err != nil || r.Opcode != req[1] {
			return false
		}
		if r.Opcode == pcpOpMap && r.HasMap {
			// RFC 6887 11.3: match nonce, protocol and internal port.
			q := req[pcpHeaderLen:]
			if !bytes.Equal(r.Nonce[:], q[0:12]) || r.Protocol != q[12] ||
				r.InternalPort != binary.BigEndian.Uint16(q[16:18]) {
				return false
			}
		}
		resp = r
		return true
	})
	if err != nil {
		return resp, fmt.Errorf("PCP: %w", err)
	}
	if parseErr != nil {
		return resp, parseErr
	}
	p.epoch.observe(resp.Epoch, p.clock.Now())
	if resp.Result != 0 {
		return resp, &PCPError{Code: resp.Result, Lifetime: resp.Lifetime}
	}
	return resp, nil
}

// check sends ANNOUNCE: the reply carries the epoch. PCP has no request for
// the external address alone, so none is returned.
func (p *pcpMapper) check(ctx context.Context) (netip.Addr, bool, error) {
	_, err := p.do(ctx, pcpRequest(pcpOpAnnounce, 0, p.client, [12]byte{}, 0, 0, 0))
	return netip.Addr{}, false, err
}

func (p *pcpMapper) add(ctx context.Context, r request) (grant, error) {
	secs := uint32(r.Lease / time.Second)
	req := pcpRequest(pcpOpMap, secs, p.client, r.Nonce, pcpProto(r.Proto), r.InternalPort, r.ExternalPort)
	resp, err := p.do(ctx, req)
	if err != nil {
		return grant{}, err
	}
	if !resp.HasMap || resp.Lifetime == 0 {
		return grant{}, fmt.Errorf("PCP: MAP reply without mapping or lifetime: %w", ErrMalformed)
	}
	return grant{
		ExternalPort: resp.ExternalPort,
		Lifetime:     time.Duration(resp.Lifetime) * time.Second,
		ExternalAddr: resp.ExternalAddr,
	}, nil
}

func (p *pcpMapper) remove(ctx context.Context, r request, granted uint16) error {
	req := pcpRequest(pcpOpMap, 0, p.client, r.Nonce, pcpProto(r.Proto), r.InternalPort, granted)
	_, err := p.do(ctx, req)
	return err
}

func (p *pcpMapper) verify(context.Context, request, uint16) (bool, error) { return true, nil }

func (p *pcpMapper) checksByRenewing() bool { return true }

func (p *pcpMapper) takeReset() bool { return p.epoch.take() }

var _ mapper = (*pcpMapper)(nil)
