package tunnel

import (
	"bytes"
	"strings"
	"testing"

	"github.com/porthole-dev/porthole/proto"
)

func TestProbeLine(t *testing.T) {
	nonce := strings.Repeat("0f", proto.ProbeNonceLen)
	for _, tc := range []struct {
		line   string
		prefix bool // could still be a probe
		ok     bool // a complete, well-formed probe
	}{
		{"", true, false},
		{"PORT", true, false},
		{"POST / HTTP/1.1\r\n", false, false},
		{"GET / HTTP/1.1\r\n", false, false},
		{"\x16\x03\x01", false, false}, // a TLS client hello
		{proto.ProbeMagic, true, false},
		{proto.ProbeMagic + nonce + "\n", true, true},
		{proto.ProbeMagic + nonce + "x", true, false},
		{proto.ProbeMagic + strings.Repeat("zz", proto.ProbeNonceLen) + "\n", true, false},
		{proto.ProbeMagic + nonce[:10] + "\n", true, false},
	} {
		if got := probePrefix([]byte(tc.line)); got != tc.prefix {
			t.Errorf("probePrefix(%q) = %v, want %v", tc.line, got, tc.prefix)
		}
		n, ok := parseProbeLine([]byte(tc.line))
		if ok != tc.ok {
			t.Errorf("parseProbeLine(%q) ok = %v, want %v", tc.line, ok, tc.ok)
		}
		if ok && !bytes.Equal(n, bytes.Repeat([]byte{0x0f}, proto.ProbeNonceLen)) {
			t.Errorf("parseProbeLine(%q) nonce %x", tc.line, n)
		}
	}
}

// FuzzProbeLine: bytes from anyone at the relay's address never panic the parser,
// and only a line of the exact form yields a nonce.
func FuzzProbeLine(f *testing.F) {
	f.Add([]byte(proto.ProbeMagic + strings.Repeat("ab", proto.ProbeNonceLen) + "\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: cam\r\n\r\n"))
	f.Add([]byte(proto.ProbeMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		nonce, ok := parseProbeLine(b)
		if !ok {
			return
		}
		if len(nonce) != proto.ProbeNonceLen || !probePrefix(b) || len(b) != proto.ProbeLineLen || b[len(b)-1] != '\n' {
			t.Fatalf("accepted %q", b)
		}
	})
}
