package config

import (
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		tok := NewToken()
		if len(tok) != TokenLen || TokenLen != 54 || !strings.HasPrefix(tok, TokenPrefix) {
			t.Fatalf("NewToken() = %q: want %s and 49 more characters", tok, TokenPrefix)
		}
		if b, err := base64.RawURLEncoding.Strict().DecodeString(tok[5:48]); err != nil || len(b) != 32 {
			t.Fatalf("NewToken() = %q: payload not 32 bytes of raw-URL base64 (%v)", tok, err)
		}
		if legacy, err := CheckToken(tok); err != nil || legacy {
			t.Fatalf("CheckToken(NewToken()) = %v, %v", legacy, err)
		}
		if seen[tok] {
			t.Fatalf("NewToken repeated %q", tok)
		}
		seen[tok] = true
	}
}

// A known token: the format is fixed, so a token made today must pass tomorrow.
func TestTokenFormatStable(t *testing.T) {
	const tok = "pht1_3h4o5z4X035aFzHZf83KLRUL060jDwuH7CeAmqxfo-wfjqokg"
	if legacy, err := CheckToken(tok); err != nil || legacy {
		t.Fatalf("CheckToken = %v, %v", legacy, err)
	}
	if got := tokenChecksum(tok[5:48]); got != "fjqokg" {
		t.Fatalf("checksum %q", got)
	}
}

func TestCheckTokenRefusesChosen(t *testing.T) {
	for _, tok := range []string{
		"password123password123",
		"correct-horse-battery-staple",
		"correct horse battery staple!",
		"0123456789abcdef0123456789abcdef",                                 // hex, 128 bits, but chosen or not: not ours
		"2f5b8c1e9a7d3f6b0c4e8a2d5f9b1c7e3a6d0f4b8c2e5a9d1f7b3c6e0a4d8f2b", // `openssl rand -hex 32`
		"q83vEjRWeJA/4rKxnUMmYGN1P5e8kMvRm0aVqEJj1uI=",                     // `openssl rand -base64 32`
		"3q2-7wG_cVf1xYpZ0mKsLt",
		"",
		"pht1_",
		"pässwörd-pässwörd-pässwörd-pässwörd",
		"0123456789abcdef0123456789abcde\x00",
	} {
		legacy, err := CheckToken(tok)
		if err == nil || legacy {
			t.Errorf("CheckToken(%q) = %v, %v; want refused", tok, legacy, err)
			continue
		}
		if !errors.Is(err, ErrWeakToken) && !errors.Is(err, ErrTokenChecksum) {
			t.Errorf("CheckToken(%q) = %v: not ErrWeakToken or ErrTokenChecksum", tok, err)
		}
		if !strings.Contains(err.Error(), "porthole-relay token") && !strings.Contains(err.Error(), "copy it again") {
			t.Errorf("CheckToken(%q) = %v: doesn't say what to do", tok, err)
		}
		if len(tok) > 4 && strings.Contains(err.Error(), tok) {
			t.Errorf("CheckToken error shows the token: %v", err)
		}
	}
}

// Every single-character change and every cut of a generated token is
// caught as a copying mistake.
func TestCheckTokenTypo(t *testing.T) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	tok := NewToken()
	for i := len(TokenPrefix); i < len(tok); i++ {
		for _, c := range []byte(alphabet) {
			if c == tok[i] {
				continue
			}
			bad := tok[:i] + string(c) + tok[i+1:]
			_, err := CheckToken(bad)
			if !errors.Is(err, ErrTokenChecksum) || !strings.Contains(err.Error(), "token checksum mismatch") || !strings.Contains(err.Error(), "copy it again") {
				t.Fatalf("typo at %d (%q for %q): %v", i, c, tok[i], err)
			}
		}
	}
	for _, bad := range []string{tok[:len(tok)-1], tok + "x", tok[:30], " " + tok[1:]} {
		if _, err := CheckToken(bad); err == nil {
			t.Errorf("CheckToken(%q) accepted", bad)
		} else if strings.Contains(err.Error(), bad) {
			t.Errorf("error shows the token: %v", err)
		}
	}
	if _, err := CheckToken(tok[:len(tok)-1]); !errors.Is(err, ErrTokenChecksum) {
		t.Errorf("token cut short: %v", err)
	}
}

// oldToken is what NewToken made before tokens had a checksum.
func oldToken(r *rand.ChaCha8) string {
	var b [32]byte
	r.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Tokens made by the old NewToken keep working (with a warning): a random
// one essentially never looks chosen (about 3e-7 each, see token.go).
func TestCheckTokenLegacy(t *testing.T) {
	r := rand.NewChaCha8([32]byte{'p', 'o', 'r', 't', 'h', 'o', 'l', 'e'})
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	for range n {
		tok := oldToken(r)
		if legacy, err := CheckToken(tok); err != nil || !legacy {
			t.Fatalf("old generated token %q: legacy=%v, %v", tok, legacy, err)
		}
	}
}

// Old-format strings that are obviously not random are still refused.
func TestCheckTokenLegacyChosen(t *testing.T) {
	for _, tok := range []string{
		strings.Repeat("A", 43),
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ", // a sequence
		"passwordPASSWORDpasswordPASSWORDpassword12A", // 16 different characters
		"xK9-mQ2_vL7rT4nW8pB3zF6hJ0cY5gD1sE0000001bA", // a run of 0s
		"xK9-mQ2_vL7rT4nW8pB3zF6hJ0cY5gD1sE12345678A", // counting
		"xk9-mq2_vl7rt4nw8pb3zf6hj0cy5gd1se7ua2oi6eA", // one upper-case letter
		"XK9-MQ2_VL7RT4NW8PB3ZF6HJ0CY5GD1SE7UA2OI6Ec", // one lower-case letter
	} {
		if len(tok) != 43 {
			t.Fatalf("test token %q has %d characters", tok, len(tok))
		}
		if b, err := base64.RawURLEncoding.Strict().DecodeString(tok); err != nil || len(b) != 32 {
			t.Fatalf("test token %q doesn't decode: %v", tok, err)
		}
		legacy, err := CheckToken(tok)
		if err == nil || legacy || !errors.Is(err, ErrWeakToken) || !strings.Contains(err.Error(), "looks made up") {
			t.Errorf("CheckToken(%q) = %v, %v; want refused as made up", tok, legacy, err)
		}
	}
	// 43 characters whose unused low bits are set: not what the old NewToken made.
	if _, err := CheckToken("Tv1OH58rpPw8fG8qtC4bcX8PVME39rjnRGwU6pt62iH"); !errors.Is(err, ErrWeakToken) {
		t.Errorf("non-canonical base64: %v", err)
	}
}

// Payloads of the new format follow the same rule, so a token whose
// checksum was computed for a chosen payload is refused too.
func TestCheckTokenChosenPayload(t *testing.T) {
	payload := strings.Repeat("A", 43)
	tok := TokenPrefix + payload + tokenChecksum(payload)
	if _, err := CheckToken(tok); !errors.Is(err, ErrWeakToken) {
		t.Fatalf("chosen payload with a valid checksum: %v", err)
	}
}

// FuzzCheckToken: never a panic, only the two formats accepted, and no
// message shows the token.
func FuzzCheckToken(f *testing.F) {
	for _, s := range []string{"", NewToken(), tokOld, "password123password123", "pht1_", TokenPrefix + strings.Repeat("A", 49)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		legacy, err := CheckToken(tok)
		if err != nil {
			if legacy {
				t.Fatal("refused and legacy")
			}
			if len(tok) >= 8 && strings.Contains(err.Error(), tok) {
				t.Fatalf("error shows the token: %v", err)
			}
			return
		}
		switch {
		case legacy && len(tok) == 43:
		case !legacy && len(tok) == TokenLen && strings.HasPrefix(tok, TokenPrefix):
		default:
			t.Fatalf("accepted %q (legacy %v)", tok, legacy)
		}
	})
}
