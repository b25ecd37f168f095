package proto

import "bytes"

// The UDP probe verifies a direct path to the agent's WireGuard port from outside,
// as [ProbeLine] does for TCP services. The relay sends [UDPProbe] to the mapped
// public address:port; whatever receives UDP there (the agent's WireGuard socket)
// hands every packet to [UDPProbeReply] before WireGuard and sends the reply back
// to the sender. The relay accepts the reply carrying its nonce.
//
// A probe can never be a WireGuard message: those start with a type of 1 to 4 and
// three zero bytes, a probe with 0xff. The reply is the same size as the probe (no
// amplification) and has its own magic, so a reply is never answered again and an
// echo service at the mapped port doesn't pass. The reply is not keyed: it proves
// that a Porthole WireGuard endpoint answers at the address, while the TCP probes of
// the same address prove that it is this very agent.
//
//	probe: 0xff "porthole-probe" version(1) nonce(16)
//	reply: 0xff "porthole-reply" version(1) nonce(16)
const (
	udpProbeMagic = "\xffporthole-probe"
	udpReplyMagic = "\xffporthole-reply"
	udpProbeVer   = 1
)

// UDPProbeLen is the size of a UDP probe and of its reply.
const UDPProbeLen = len(udpProbeMagic) + 1 + ProbeNonceLen

// UDPProbe is the probe packet the relay sends for nonce (ProbeNonceLen bytes).
func UDPProbe(nonce []byte) []byte {
	return udpPacket(udpProbeMagic, nonce)
}

func udpPacket(magic string, nonce []byte) []byte {
	b := make([]byte, 0, UDPProbeLen)
	b = append(b, magic...)
	b = append(b, udpProbeVer)
	var n [ProbeNonceLen]byte
	copy(n[:], nonce)
	return append(b, n[:]...)
}

// UDPProbeReply returns the reply to pkt when pkt is a UDP probe, and ok=false
// for anything else (WireGuard's packets, garbage, replies), which the caller
// handles as usual. It allocates only for a probe.
func UDPProbeReply(pkt []byte) (reply []byte, ok bool) {
	if len(pkt) != UDPProbeLen || pkt[0] != 0xff || string(pkt[:len(udpProbeMagic)]) != udpProbeMagic || pkt[len(udpProbeMagic)] != udpProbeVer {
		return nil, false
	}
	return udpPacket(udpReplyMagic, pkt[len(udpProbeMagic)+1:]), true
}

// IsUDPProbeReply reports whether pkt is the reply to the probe for nonce.
func IsUDPProbeReply(pkt, nonce []byte) bool {
	return len(nonce) == ProbeNonceLen && bytes.Equal(pkt, udpPacket(udpReplyMagic, nonce))
}
