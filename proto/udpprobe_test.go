package proto

import (
	"bytes"
	"testing"
)

func TestUDPProbe(t *testing.T) {
	nonce := bytes.Repeat([]byte{0xa5}, ProbeNonceLen)
	p := UDPProbe(nonce)
	if len(p) != UDPProbeLen || p[0] != 0xff {
		t.Fatalf("probe %x: want %d bytes starting 0xff", p, UDPProbeLen)
	}
	r, ok := UDPProbeReply(p)
	if !ok {
		t.Fatal("UDPProbeReply refused a probe")
	}
	if len(r) != len(p) {
		t.Errorf("reply of %d bytes for a probe of %d (no amplification)", len(r), len(p))
	}
	if !IsUDPProbeReply(r, nonce) {
		t.Errorf("IsUDPProbeReply refused the reply %x", r)
	}
	other := bytes.Repeat([]byte{0x5a}, ProbeNonceLen)
	if IsUDPProbeReply(r, other) {
		t.Error("a reply to another nonce passed")
	}
	if IsUDPProbeReply(p, nonce) {
		t.Error("the probe itself (an echo) passed as the reply")
	}
	if _, ok := UDPProbeReply(r); ok {
		t.Error("a reply was answered: two agents could loop")
	}
	// WireGuard's messages (type 1..4, three zero bytes) and garbage are not probes.
	for _, pkt := range [][]byte{
		nil, {0xff}, p[:len(p)-1], append(append([]byte{}, p...), 0),
		append([]byte{1, 0, 0, 0}, make([]byte, 144)...),
		append([]byte{4, 0, 0, 0}, p[4:]...),
	} {
		if _, ok := UDPProbeReply(pkt); ok {
			t.Errorf("UDPProbeReply answered %x", pkt)
		}
	}
	bad := append([]byte{}, p...)
	bad[len(udpProbeMagic)] = 2 // another version
	if _, ok := UDPProbeReply(bad); ok {
		t.Error("a probe of an unknown version was answered")
	}
}

// FuzzUDPProbeReply: any packet at the agent's WireGuard port never panics the
// check, and only a probe gets a reply, of the probe's size.
func FuzzUDPProbeReply(f *testing.F) {
	f.Add(UDPProbe(make([]byte, ProbeNonceLen)))
	f.Add([]byte{1, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, ok := UDPProbeReply(b)
		if !ok {
			if r != nil {
				t.Fatal("reply without ok")
			}
			return
		}
		if len(r) != len(b) || b[0] != 0xff {
			t.Fatalf("answered %x with %x", b, r)
		}
		if !IsUDPProbeReply(r, b[len(b)-ProbeNonceLen:]) {
			t.Fatalf("reply %x does not carry the nonce", r)
		}
	})
}
