package config

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Tokens
//
// An agent's token is the key both sides prove knowledge of in the tunnel
// handshake. Anyone who can watch or provoke a handshake can test guesses
// offline, so a token must be unguessable: only generated tokens are
// accepted, never chosen ones. `porthole-relay token` (NewToken) makes them
// in this format:
//
//	pht1_ + base64url(32 random bytes) + base64url(first 4 bytes of SHA-256(pht1_ + payload))
//
// that is "pht1_", 43 characters of payload (256 bits) and a 6-character
// checksum, 54 characters in all, only A-Z a-z 0-9 - _ (safe in YAML,
// environment variables, systemd credentials and shells without quoting).
// The checksum catches a token cut short or mistyped while copying it
// between relay.yaml and agent.yaml: the config check says so instead of the
// relay refusing the agent later with "bad token".
//
// Tokens made before the format existed (43 characters of base64url that
// decode to exactly 32 bytes, with the unused low bits of the last
// character zero, as the old NewToken made them) are still accepted, with a
// warning suggesting a new one. A human can type such a string too, so the
// payload of both formats must also not look chosen (see looksRandom): at
// least 20 different characters, at least 3 upper- and 3 lower-case letters,
// no run of 6 equal characters and no run of 6 ascending or descending ones
// ("abcdef", "654321"). A random payload fails that with probability about
// 3e-7 (distinct < 20: 2.0e-8; < 3 upper or < 3 lower: 1.7e-7; runs: < 1e-7),
// and NewToken draws again in that case, so a generated token never fails.
// Anything else, hex strings and passphrases included, is refused with a
// message saying how to make a token.

// TokenPrefix starts every token NewToken makes; the 1 is the format version.
const TokenPrefix = "pht1_"

// Token format sizes.
const (
	tokenPayloadLen  = 43 // base64url of 32 bytes, no padding
	tokenChecksumLen = 6  // base64url of 4 bytes, no padding
	// TokenLen is the length of a token NewToken makes.
	TokenLen = len(TokenPrefix) + tokenPayloadLen + tokenChecksumLen
)

var (
	// ErrWeakToken is returned (wrapped) by CheckToken for anything that is
	// not a generated token: it could be guessed.
	ErrWeakToken = errors.New("weak token")
	// ErrTokenChecksum is returned (wrapped) by CheckToken for a token in
	// the generated format whose checksum or length is wrong: a copying mistake.
	ErrTokenChecksum = errors.New("token checksum mismatch")
)

// tokenHint tells the user how to make a token.
const tokenHint = "make one with `porthole-relay token` and put it in both relay.yaml and agent.yaml"

var b64 = base64.RawURLEncoding.Strict()

// NewToken returns a new random token in the format above.
func NewToken() string {
	for {
		var b [32]byte
		rand.Read(b[:]) // never fails (crypto/rand.Read crashes the program instead)
		payload := b64.EncodeToString(b[:])
		if looksRandom(payload) == "" {
			return TokenPrefix + payload + tokenChecksum(payload)
		}
	}
}

// tokenChecksum is the checksum of a payload: the first 4 bytes of
// SHA-256 over prefix and payload, base64url.
func tokenChecksum(payload string) string {
	sum := sha256.Sum256([]byte(TokenPrefix + payload))
	return b64.EncodeToString(sum[:4])
}

// CheckToken accepts tokens NewToken makes, and (legacy = true) the 43
// characters of base64url the old NewToken made: callers should warn that
// such a token has no checksum and suggest a new one. Everything else is
// refused with an error wrapping ErrWeakToken or ErrTokenChecksum that says
// what to do. No error or warning contains the token.
func CheckToken(tok string) (legacy bool, err error) {
	switch {
	case tok == "":
		return false, fmt.Errorf("%w: empty: %s", ErrWeakToken, tokenHint)
	case strings.HasPrefix(tok, TokenPrefix) && len(tok) != tokenPayloadLen:
		if len(tok) != TokenLen {
			return false, fmt.Errorf("%w: the token has %d characters where a generated one has %d: copy it again", ErrTokenChecksum, len(tok), TokenLen)
		}
		payload, sum := tok[len(TokenPrefix):len(TokenPrefix)+tokenPayloadLen], tok[len(TokenPrefix)+tokenPayloadLen:]
		if b, err := b64.DecodeString(payload); err != nil || len(b) != 32 {
			return false, fmt.Errorf("%w: the token has a character a generated one can't have: copy it again", ErrTokenChecksum)
		}
		if subtle.ConstantTimeCompare([]byte(sum), []byte(tokenChecksum(payload))) != 1 {
			return false, fmt.Errorf("%w: copy it again (it must be the whole line `porthole-relay token` printed)", ErrTokenChecksum)
		}
		if why := looksRandom(payload); why != "" {
			return false, fmt.Errorf("%w: it looks made up (%s): %s", ErrWeakToken, why, tokenHint)
		}
		return false, nil
	case len(tok) == tokenPayloadLen:
		if b, err := b64.DecodeString(tok); err != nil || len(b) != 32 {
			break
		}
		if why := looksRandom(tok); why != "" {
			return false, fmt.Errorf("%w: it looks made up (%s): %s", ErrWeakToken, why, tokenHint)
		}
		return true, nil
	}
	return false, fmt.Errorf("%w: only generated tokens are accepted, as a chosen one can be guessed: %s", ErrWeakToken, tokenHint)
}

// looksRandom returns why a base64url payload looks chosen rather than
// drawn at random, or "" (the rule is in the comment at the top).
func looksRandom(s string) string {
	var seen [128]bool
	distinct, upper, lower := 0, 0, 0
	same, up, down := 1, 1, 1
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 128 {
			return "not ASCII"
		}
		if !seen[c] {
			seen[c] = true
			distinct++
		}
		switch {
		case c >= 'A' && c <= 'Z':
			upper++
		case c >= 'a' && c <= 'z':
			lower++
		}
		if i > 0 {
			p := s[i-1]
			same, up, down = next(same, c == p), next(up, c == p+1), next(down, c+1 == p)
			if same >= 6 || up >= 6 || down >= 6 {
				return "a run of 6 equal or consecutive characters"
			}
		}
	}
	switch {
	case distinct < 20:
		return fmt.Sprintf("only %d different characters", distinct)
	case upper < 3 || lower < 3:
		return "too few upper- or lower-case letters"
	}
	return ""
}

// next extends a run length when cont, or starts a new one.
func next(run int, cont bool) int {
	if cont {
		return run + 1
	}
	return 1
}
