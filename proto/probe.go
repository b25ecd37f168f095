package proto

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// ProbeMagic starts a reachability probe. To verify a direct path the relay dials the
// agent's public address:port and writes ProbeMagic, 32 hex digits of nonce and "\n"
// (see [ProbeLine]); the agent's listener answers with [ProbeAnswer] in hex and "\n".
// Only the agent of this session can answer: the key is the session's TLS exporter,
// which only the two ends of the tunnel know.
const ProbeMagic = "PORTHOLE-PROBE/1 "

// ProbeNonceLen is the nonce length in bytes (hex-encoded on the wire).
const ProbeNonceLen = 16

// ProbeLineLen is the length of the probe's first line, newline included.
const ProbeLineLen = len(ProbeMagic) + 2*ProbeNonceLen + 1

// ProbeAnswerLen is the length of the agent's answer line, newline included.
const ProbeAnswerLen = 2*sha256.Size + 1

// ProbeLine is the challenge line the relay writes for nonce (ProbeNonceLen bytes).
func ProbeLine(nonce []byte) string {
	return ProbeMagic + hex.EncodeToString(nonce) + "\n"
}

// ProbePrefix reports whether b can still be the start of a probe line: it agrees
// with [ProbeMagic] as far as both go. A listener shared with viewers uses it to
// tell a probe from a viewer's first bytes as they arrive.
func ProbePrefix(b []byte) bool {
	k := min(len(b), len(ProbeMagic))
	return string(b[:k]) == ProbeMagic[:k]
}

// ParseProbeLine returns the nonce of a complete probe line: the magic, exactly
// 2*ProbeNonceLen hex digits and a newline.
func ParseProbeLine(line []byte) ([]byte, bool) {
	if len(line) != ProbeLineLen || !ProbePrefix(line) || line[len(line)-1] != '\n' {
		return nil, false
	}
	nonce := make([]byte, ProbeNonceLen)
	if _, err := hex.Decode(nonce, line[len(ProbeMagic):len(line)-1]); err != nil {
		return nil, false
	}
	return nonce, true
}

// ProbeAnswer is the agent's answer to nonce: HMAC-SHA256 keyed by the exporter, in
// hex (the answer line is this and "\n").
func ProbeAnswer(exporter, nonce []byte) string {
	m := hmac.New(sha256.New, exporter)
	m.Write([]byte("porthole probe v1"))
	m.Write(nonce)
	return hex.EncodeToString(m.Sum(nil))
}
