package config

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok := NewToken()
		if len(tok) != 43 {
			t.Fatalf("len(%q) = %d, want 43", tok, len(tok))
		}
		if b, err := base64.RawURLEncoding.DecodeString(tok); err != nil || len(b) != 32 {
			t.Fatalf("NewToken() = %q: not 32 bytes of raw-URL base64 (%v)", tok, err)
		}
		if err := CheckToken(tok); err != nil {
			t.Fatalf("CheckToken(NewToken()) = %v", err)
		}
		if seen[tok] {
			t.Fatalf("NewToken repeated %q", tok)
		}
		seen[tok] = true
	}
}

func TestCheckToken(t *testing.T) {
	tests := []struct {
		tok string
		ok  bool
	}{
		{"0123456789abcdef0123456789abcdef", true},     // 32 hex = 128 bits
		{"0123456789ABCDEF0123456789ABCDEF", true},     // upper-case hex
		{"0123456789abcdef0123456789abcde", false},     // 31 hex = 124 bits
		{"0123456789abcdEF0123456789abcde", false},     // mixed-case hex is still hex: 124 bits
		{"3q2-7wG_cVf1xYpZ0mKsLt", true},               // 22 base64url = 132 bits
		{"3q2-7wG_cVf1xYpZ0mKsL", false},               // 21 = 126 bits
		{"Zm9vYmFyYmF6cXV4+/==", false},                // 20 base64 = 120 bits
		{"correct horse battery staple!", true},        // 29 printable = 190 bits
		{"password123", false},                         // 11 * 6 = 66 bits
		{strings.Repeat("a", 40), false},               // 1 distinct character
		{strings.Repeat("abcdefg", 10), false},         // 7 distinct characters
		{"", false},                                    //
		{"0123456789abcdef0123456789abcde\x00", false}, // control character
		{"pässwörd-pässwörd-pässwörd-pässwörd", false}, // not ASCII
	}
	for _, tt := range tests {
		err := CheckToken(tt.tok)
		if (err == nil) != tt.ok {
			t.Errorf("CheckToken(%q) = %v, want ok=%v", tt.tok, err, tt.ok)
		}
		if err != nil {
			if !errors.Is(err, ErrWeakToken) {
				t.Errorf("CheckToken(%q) = %v, not ErrWeakToken", tt.tok, err)
			}
			if tt.tok != "" && strings.Contains(err.Error(), tt.tok) {
				t.Errorf("CheckToken error shows the token: %v", err)
			}
		}
	}
}
