package proto

import (
	"bytes"
	"errors"
	"testing"
)

func TestDatagramRoundTrip(t *testing.T) {
	h := DatagramHeader{Kind: DatagramWireGuard, Flow: 0xdeadbeef}
	b, err := AppendDatagram(nil, h, []byte("wg packet"))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != DatagramHeaderLen+len("wg packet") || b[0] != 0x11 {
		t.Fatalf("encoded %x", b)
	}
	got, payload, err := ParseDatagram(b)
	if err != nil || got != h || string(payload) != "wg packet" {
		t.Fatalf("got %+v %q %v", got, payload, err)
	}
	for _, bad := range [][]byte{nil, {0x11, 0, 0, 0}, {0x21, 0, 0, 0, 1}, {0x12, 0, 0, 0, 1}, {0x10, 0, 0, 0, 1}} {
		if _, _, err := ParseDatagram(bad); !errors.Is(err, ErrBadDatagram) {
			t.Errorf("%x: %v", bad, err)
		}
	}
	if _, err := AppendDatagram(nil, DatagramHeader{Kind: 16}, nil); !errors.Is(err, ErrBadDatagram) {
		t.Fatalf("kind 16: %v", err)
	}
}

func FuzzParseDatagram(f *testing.F) {
	b, _ := AppendDatagram(nil, DatagramHeader{Kind: DatagramWireGuard, Flow: 7}, []byte{1, 2, 3})
	f.Add(b)
	f.Add([]byte{0x11, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, err := ParseDatagram(b)
		if err != nil {
			return
		}
		enc, err := AppendDatagram(nil, h, payload)
		if err != nil || !bytes.Equal(enc, b) {
			t.Fatalf("re-encoded %x (%v), input %x", enc, err, b)
		}
	})
}
