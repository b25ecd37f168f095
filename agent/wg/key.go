package wg

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"

	"golang.org/x/crypto/curve25519"
)

// Key is a Curve25519 key, private or public, as WireGuard uses them.
type Key [32]byte

// ErrBadKey is wrapped by ParseKey's errors.
var ErrBadKey = errors.New("not a WireGuard key (44 characters of base64, as wg genkey prints)")

// ParseKey reads a key in the base64 form of WireGuard configs.
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("%w: %d characters", ErrBadKey, len(s))
	}
	copy(k[:], b)
	return k, nil
}

// NewPrivateKey returns a new random private key, clamped as wg genkey does.
func NewPrivateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("wg: new key: %w", err)
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// PublicKey is the public key of private key k.
func (k Key) PublicKey() Key {
	var pub Key
	curve25519.ScalarBaseMult((*[32]byte)(&pub), (*[32]byte)(&k))
	return pub
}

// IsZero reports whether k is unset.
func (k Key) IsZero() bool { return k == Key{} }

// String is the base64 form of WireGuard configs. Never print a private key.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// hex is the form of wireguard-go's configuration protocol.
func (k Key) hex() string { return hex.EncodeToString(k[:]) }
