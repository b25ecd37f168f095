package proto

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// ProbeMagic starts a reachability probe. To verify a direct path the relay dials the
// agent's public address:port and writes ProbeMagic, 32 hex digits of nonce and "\n";
// the agent's listener answers with [ProbeAnswer] in hex and "\n". Only the agent of
// this session can answer: the key is the session's TLS exporter, which only the two
// ends of the tunnel know.
const ProbeMagic = "PORTHOLE-PROBE/1 "

// ProbeNonceLen is the nonce length in bytes (hex-encoded on the wire).
const ProbeNonceLen = 16

// ProbeLineLen is the length of the probe's first line, newline included.
const ProbeLineLen = len(ProbeMagic) + 2*ProbeNonceLen + 1

// ProbeAnswer is the agent's answer to nonce: HMAC-SHA256 keyed by the exporter.
func ProbeAnswer(exporter, nonce []byte) string {
	m := hmac.New(sha256.New, exporter)
	m.Write([]byte("porthole probe v1"))
	m.Write(nonce)
	return hex.EncodeToString(m.Sum(nil))
}
