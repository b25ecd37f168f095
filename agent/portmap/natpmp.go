package portmap

// NAT-PMP (RFC 6886) is spoken here directly rather than through
// jackpal/go-nat-pmp: that library hides the seconds-since-start-of-epoch
// field, which is how a router reboot is noticed, and it owns its sockets and
// retransmission timeouts (up to 64 s), which neither probing with a short
// timeout nor tests on loopback can shorten. The protocol is a dozen bytes each
// way; jackpal/gateway still finds the gateway.

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

const (
	natpmpVersion        = 0
	natpmpOpExternalAddr = 0
	natpmpOpMapUDP       = 1
	natpmpOpMapTCP       = 2
	natpmpReplyBit       = 128
)

// natpmpResponse is a parsed NAT-PMP reply.
type natpmpResponse struct {
	Op           uint8 // the request's opcode (reply opcode minus 128)
	Result       uint16
	Epoch        uint32
	ExternalAddr netip.Addr // Op 0, Result 0
	InternalPort uint16     // Op 1/2, Result 0
	ExternalPort uint16     // Op 1/2, Result 0
	Lifetime     uint32     // Op 1/2, Result 0: seconds granted
}

// parseNATPMPResponse parses a NAT-PMP reply. Error replies may be only the
// 8-byte common header; a successful reply must carry its whole body.
func parseNATPMPResponse(b []byte) (natpmpResponse, error) {
	var r natpmpResponse
	if len(b) < 8 {
		return r, fmt.Errorf("NAT-PMP reply of %d bytes: %w", len(b), ErrMalformed)
	}
	if b[0] != natpmpVersion {
		return r, fmt.Errorf("NAT-PMP reply version %d: %w", b[0], ErrMalformed)
	}
	if b[1] < natpmpReplyBit {
		return r, fmt.Errorf("NAT-PMP reply opcode %d is a request: %w", b[1], ErrMalformed)
	}
	r.Op = b[1] - natpmpReplyBit
	r.Result = binary.BigEndian.Uint16(b[2:4])
	r.Epoch = binary.BigEndian.Uint32(b[4:8])
	if r.Result != 0 {
		return r, nil
	}
	switch r.Op {
	case natpmpOpExternalAddr:
		if len(b) < 12 {
			return r, fmt.Errorf("NAT-PMP address reply of %d bytes: %w", len(b), ErrMalformed)
		}
		r.ExternalAddr = netip.AddrFrom4([4]byte(b[8:12]))
	case natpmpOpMapUDP, natpmpOpMapTCP:
		if len(b) < 16 {
			return r, fmt.Errorf("NAT-PMP map reply of %d bytes: %w", len(b), ErrMalformed)
		}
		r.InternalPort = binary.BigEndian.Uint16(b[8:10])
		r.ExternalPort = binary.BigEndian.Uint16(b[10:12])
		r.Lifetime = binary.BigEndian.Uint32(b[12:16])
	default:
		return r, fmt.Errorf("NAT-PMP reply opcode %d: %w", r.Op, ErrMalformed)
	}
	return r, nil
}

func natpmpMapRequest(op uint8, internal, external uint16, lifetime uint32) []byte {
	b := make([]byte, 12)
	b[0], b[1] = natpmpVersion, op
	binary.BigEndian.PutUint16(b[4:6], internal)
	binary.BigEndian.PutUint16(b[6:8], external)
	binary.BigEndian.PutUint32(b[8:12], lifetime)
	return b
}

// natpmpMapper maps ports with NAT-PMP. Used by the Run goroutine only.
type natpmpMapper struct {
	server netip.AddrPort
	clock  Clock
	epoch  epochTracker
}

func (p *natpmpMapper) name() string { return "natpmp" }

// do sends req and returns the matching reply; a non-zero result becomes a *NATPMPError.
func (p *natpmpMapper) do(ctx context.Context, req []byte, internal uint16) (natpmpResponse, error) {
	var resp natpmpResponse
	_, err := exchange(ctx, p.server, req, func(b []byte) bool {
		r, err := parseNATPMPResponse(b)
		if err != nil || r.Op != req[1] {
			return false
		}
		if r.Result == 0 && r.Op != natpmpOpExternalAddr && r.InternalPort != internal {
			return false
		}
		resp = r
		return true
	})
	if err != nil {
		return resp, fmt.Errorf("NAT-PMP: %w", err)
	}
	p.epoch.observe(resp.Epoch, p.clock.Now())
	if resp.Result != 0 {
		return resp, &NATPMPError{Code: resp.Result}
	}
	return resp, nil
}

// check asks for the external address: one small exchange that also brings the epoch.
func (p *natpmpMapper) check(ctx context.Context) (netip.Addr, bool, error) {
	r, err := p.do(ctx, []byte{natpmpVersion, natpmpOpExternalAddr}, 0)
	if err != nil {
		return netip.Addr{}, false, err
	}
	if r.ExternalAddr.IsUnspecified() {
		return netip.Addr{}, true, nil
	}
	return r.ExternalAddr, true, nil
}

func natpmpOp(proto string) uint8 {
	if proto == "udp" {
		return natpmpOpMapUDP
	}
	return natpmpOpMapTCP
}

func (p *natpmpMapper) add(ctx context.Context, r request) (grant, error) {
	secs := uint32(r.Lease / time.Second)
	req := natpmpMapRequest(natpmpOp(r.Proto), r.InternalPort, r.ExternalPort, secs)
	resp, err := p.do(ctx, req, r.InternalPort)
	if err != nil {
		return grant{}, err
	}
	if resp.Lifetime == 0 {
		return grant{}, fmt.Errorf("NAT-PMP: router granted a lifetime of 0: %w", ErrMalformed)
	}
	return grant{ExternalPort: resp.ExternalPort, Lifetime: time.Duration(resp.Lifetime) * time.Second}, nil
}

func (p *natpmpMapper) remove(ctx context.Context, r request, _ uint16) error {
	// RFC 6886 3.4: delete = lifetime 0 and suggested external port 0.
	_, err := p.do(ctx, natpmpMapRequest(natpmpOp(r.Proto), r.InternalPort, 0, 0), r.InternalPort)
	return err
}

func (p *natpmpMapper) verify(context.Context, request, uint16) (bool, error) { return true, nil }

func (p *natpmpMapper) checksByRenewing() bool { return true }

func (p *natpmpMapper) takeReset() bool { return p.epoch.take() }

var _ mapper = (*natpmpMapper)(nil)
