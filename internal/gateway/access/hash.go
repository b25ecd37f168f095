package access

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// hashParams are argon2id's cost parameters.
type hashParams struct {
	memory  uint32 // KiB
	time    uint32 // passes
	threads uint8
}

// defaultParams are OWASP's first argon2id choice (m=19 MiB, t=2, p=1): about
// 50 ms on a Raspberry Pi 4, and with MaxHashes verifications at once the
// agent's memory stays small on the boxes it runs on, while a stolen hash still
// costs an offline guesser 19 MiB per guess. Verification reads the parameters
// from each hash, so raising them later keeps old hashes working.
// Tests lower them (a var, not a const, for that reason only).
var defaultParams = hashParams{memory: 19 * 1024, time: 2, threads: 1}

const (
	saltLen = 16
	keyLen  = 32

	// Limits on parameters read from a hash: a typo in the config must not
	// make each login allocate gigabytes or spin for minutes.
	maxMemory  = 256 << 10 // KiB: 256 MiB, times MaxHashes at once
	maxTime    = 64
	maxThreads = 16
	// maxPassword bounds what is hashed; longer input is a bad login.
	maxPassword = 1024
)

// ErrBadHash is wrapped by CheckHash and New for a password hash that is not
// an argon2id hash in PHC form.
var ErrBadHash = errors.New(`not an argon2id password hash ($argon2id$v=19$m=...,t=...,p=...$salt$hash; make one with: porthole-agent passwd)`)

var b64 = base64.RawStdEncoding // PHC strings: standard alphabet, no padding

// HashPassword returns password's argon2id hash in PHC form, the form the
// config's password_hash takes.
func HashPassword(password string) (string, error) {
	if len(password) > maxPassword {
		return "", fmt.Errorf("password longer than %d bytes", maxPassword)
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("salt: %w", err)
	}
	p := defaultParams
	key := argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, keyLen)
	return format(p, salt, key), nil
}

func format(p hashParams, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.memory, p.time, p.threads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// CheckHash reports whether hash is a usable argon2id hash in PHC form
// (the error wraps ErrBadHash). It does not run argon2.
func CheckHash(hash string) error {
	_, err := parseHash(hash)
	return err
}

type parsedHash struct {
	params    hashParams
	salt, key []byte
}

func parseHash(h string) (parsedHash, error) {
	var out parsedHash
	bad := func(why string) (parsedHash, error) { return parsedHash{}, fmt.Errorf("%s: %w", why, ErrBadHash) }
	parts := strings.Split(h, "$")
	if len(parts) != 6 || parts[0] != "" {
		return bad("wrong number of $-separated fields")
	}
	if parts[1] != "argon2id" {
		return bad(fmt.Sprintf("algorithm %.20q", parts[1]))
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad(fmt.Sprintf("version %.20q (want v=%d)", parts[2], argon2.Version))
	}
	kv := strings.Split(parts[3], ",")
	if len(kv) != 3 {
		return bad("parameters are not m=...,t=...,p=...")
	}
	var vals [3]uint64
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(kv[i], name+"=")
		if !ok {
			return bad("parameters are not m=...,t=...,p=...")
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return bad(fmt.Sprintf("parameter %s=%.20q", name, v))
		}
		vals[i] = n
	}
	out.params = hashParams{memory: uint32(vals[0]), time: uint32(vals[1])}
	switch {
	case vals[0] > maxMemory:
		return bad(fmt.Sprintf("m=%d KiB is over the limit of %d", vals[0], maxMemory))
	case vals[1] > maxTime:
		return bad(fmt.Sprintf("t=%d is over the limit of %d", vals[1], maxTime))
	case vals[2] > maxThreads:
		return bad(fmt.Sprintf("p=%d is over the limit of %d", vals[2], maxThreads))
	case vals[0] < 8*vals[2]:
		return bad("m must be at least 8*p")
	}
	out.params.threads = uint8(vals[2])
	var err error
	if out.salt, err = b64.DecodeString(parts[4]); err != nil || len(out.salt) < 8 {
		return bad("salt is not base64 of at least 8 bytes")
	}
	if out.key, err = b64.DecodeString(parts[5]); err != nil || len(out.key) < 16 || len(out.key) > 64 {
		return bad("hash is not base64 of 16 to 64 bytes")
	}
	return out, nil
}

// verify runs argon2id on password with h's parameters and salt.
func (h parsedHash) verify(password string) bool {
	p := h.params
	key := argon2.IDKey([]byte(password), h.salt, p.time, p.memory, p.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(key, h.key) == 1
}

// cost orders hashes by the work verifying them takes.
func (p hashParams) cost() uint64 { return uint64(p.memory) * uint64(p.time) }

// dummyHash is a hash no password matches, with params p: unknown names are
// verified against it so they cost what a real viewer costs.
func dummyHash(p hashParams) parsedHash {
	salt, key := make([]byte, saltLen), make([]byte, keyLen)
	rand.Read(salt)
	rand.Read(key)
	return parsedHash{params: p, salt: salt, key: key}
}
