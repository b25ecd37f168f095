package config

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
)

// ErrWeakToken is returned (wrapped) by CheckToken for a token that is too
// short or too repetitive to be a 128-bit random secret.
var ErrWeakToken = errors.New("token too weak")

// MinTokenBits is the least estimated entropy CheckToken accepts.
const MinTokenBits = 128

// NewToken returns a new random token: 32 random bytes, base64 raw-URL
// encoded (43 characters).
func NewToken() string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand.Read crashes the program instead)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// CheckToken refuses tokens with less than MinTokenBits of estimated entropy.
// The estimate is len(tok) * log2(alphabet), the alphabet being the smallest of
// hex (16), base64/base64url (64) and printable ASCII (95) that holds every
// character; tokens with fewer than 8 distinct characters are refused too.
// The returned error never contains the token.
func CheckToken(tok string) error {
	if tok == "" {
		return fmt.Errorf("%w: empty", ErrWeakToken)
	}
	var (
		distinct       = map[rune]bool{}
		hex            = true
		base64ish      = true
		printableASCII = true
	)
	for _, c := range tok {
		distinct[c] = true
		isDigit := c >= '0' && c <= '9'
		isLower := c >= 'a' && c <= 'z'
		isUpper := c >= 'A' && c <= 'Z'
		// Mixed-case hex still counts as hex: case adds no randomness
		// to a hex dump.
		if !isDigit && !(c >= 'a' && c <= 'f') && !(c >= 'A' && c <= 'F') {
			hex = false
		}
		if !isDigit && !isLower && !isUpper && c != '+' && c != '/' && c != '-' && c != '_' && c != '=' {
			base64ish = false
		}
		if c < 0x20 || c > 0x7e {
			printableASCII = false
		}
	}
	if !printableASCII {
		return fmt.Errorf("%w: only printable ASCII characters are allowed", ErrWeakToken)
	}
	if len(distinct) < 8 {
		return fmt.Errorf("%w: fewer than 8 distinct characters", ErrWeakToken)
	}
	alphabet := 95.0
	switch {
	case hex:
		alphabet = 16
	case base64ish:
		alphabet = 64
	}
	bits := float64(len(tok)) * math.Log2(alphabet)
	if bits < MinTokenBits {
		return fmt.Errorf("%w: about %d bits, need %d", ErrWeakToken, int(bits), MinTokenBits)
	}
	return nil
}
