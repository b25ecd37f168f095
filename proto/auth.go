package proto

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
)

// ExporterLabel is the TLS exporter label both sides use for channel binding (RFC 8446 7.5).
const ExporterLabel = "EXPORTER-porthole-auth-v1"

// ExporterLen is the number of exporter bytes mixed into each proof.
const ExporterLen = 32

// KeyingMaterialExporter is what [Exporter] needs of a connection: a TLS exporter
// (RFC 8446 7.5). *tls.ConnectionState and every tunnel transport connection have one.
type KeyingMaterialExporter interface {
	ExportKeyingMaterial(label string, context []byte, length int) ([]byte, error)
}

// Exporter returns this connection's channel-binding bytes.
func Exporter(c KeyingMaterialExporter) ([]byte, error) {
	b, err := c.ExportKeyingMaterial(ExporterLabel, nil, ExporterLen)
	if err != nil {
		return nil, fmt.Errorf("proto: tls exporter: %w", err)
	}
	return b, nil
}

// RelayProofMAC is the relay's proof that it knows token, bound to the connection.
func RelayProofMAC(token []byte, name string, exporter []byte) []byte {
	return proofMAC(token, "porthole relay proof v1", name, exporter)
}

// AgentProofMAC is the agent's proof that it knows token, bound to the connection.
func AgentProofMAC(token []byte, name string, exporter []byte) []byte {
	return proofMAC(token, "porthole agent proof v1", name, exporter)
}

func proofMAC(token []byte, role, name string, exporter []byte) []byte {
	m := hmac.New(sha256.New, token)
	// Length-prefix each variable field so no two inputs collide.
	for _, f := range [][]byte{[]byte(role), []byte(name), exporter} {
		m.Write([]byte{byte(len(f) >> 8), byte(len(f))})
		m.Write(f)
	}
	return m.Sum(nil)
}

// VerifyMAC compares two proofs in constant time.
func VerifyMAC(got, want []byte) bool { return hmac.Equal(got, want) }
