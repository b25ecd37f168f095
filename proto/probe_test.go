package proto

import (
	"bytes"
	"strings"
	"testing"
)

func TestProbeLine(t *testing.T) {
	nonce := strings.Repeat("0f", ProbeNonceLen)
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
		{ProbeMagic, true, false},
		{ProbeMagic + nonce + "\n", true, true},
		{ProbeMagic + nonce + "x", true, false},
		{ProbeMagic + strings.Repeat("zz", ProbeNonceLen) + "\n", true, false},
		{ProbeMagic + nonce[:10] + "\n", true, false},
	} {
		if got := ProbePrefix([]byte(tc.line)); got != tc.prefix {
			t.Errorf("ProbePrefix(%q) = %v, want %v", tc.line, got, tc.prefix)
		}
		n, ok := ParseProbeLine([]byte(tc.line))
		if ok != tc.ok {
			t.Errorf("ParseProbeLine(%q) ok = %v, want %v", tc.line, ok, tc.ok)
		}
		if ok && !bytes.Equal(n, bytes.Repeat([]byte{0x0f}, ProbeNonceLen)) {
			t.Errorf("ParseProbeLine(%q) nonce %x", tc.line, n)
		}
	}
	// What the relay writes is what the agent parses.
	want := bytes.Repeat([]byte{0xa5}, ProbeNonceLen)
	line := ProbeLine(want)
	if got, ok := ParseProbeLine([]byte(line)); !ok || !bytes.Equal(got, want) || len(line) != ProbeLineLen {
		t.Fatalf("ProbeLine round trip: %q -> %x %v", line, got, ok)
	}
	if n := len(ProbeAnswer([]byte("exp"), want)) + 1; n != ProbeAnswerLen {
		t.Fatalf("answer line is %d bytes, ProbeAnswerLen %d", n, ProbeAnswerLen)
	}
}

// FuzzProbeLine: bytes from anyone at the relay's address never panic the parser,
// and only a line of the exact form yields a nonce.
func FuzzProbeLine(f *testing.F) {
	f.Add([]byte(ProbeMagic + strings.Repeat("ab", ProbeNonceLen) + "\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: cam\r\n\r\n"))
	f.Add([]byte(ProbeMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		nonce, ok := ParseProbeLine(b)
		if !ok {
			return
		}
		if len(nonce) != ProbeNonceLen || !ProbePrefix(b) || len(b) != ProbeLineLen || b[len(b)-1] != '\n' {
			t.Fatalf("accepted %q", b)
		}
		if again, ok := ParseProbeLine([]byte(ProbeLine(nonce))); !ok || !bytes.Equal(again, nonce) {
			t.Fatalf("nonce %x does not round-trip", nonce)
		}
	})
}
