package wg

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// Handshake admission while wireguard-go is under load. Its own defences
// (cookie replies, then a rate per source) act in its handshake workers,
// after a packet has taken a place in its one handshake queue: a single
// address sending initiations as fast as it can keeps that queue full, and a
// real phone's initiation finds no room. So, while the device is under load,
// each source (a UDP address, or a relay flow) may put only so many handshake
// messages a second into the queue; the rest are dropped here. The table is
// fixed (sources share a bucket when their hashes collide): a flood from many
// addresses costs no memory.
const (
	handshakeRate   = 50 // per second and source, while under load
	handshakeBurst  = 10
	handshakeTables = 4096
)

type handshakeLimiter struct {
	seed maphash.Seed

	mu      sync.Mutex // guards the field below
	buckets [handshakeTables]struct {
		tokens float64
		last   int64 // unix nanos of the last refill; 0: never used
	}
}

func newHandshakeLimiter() *handshakeLimiter { return &handshakeLimiter{seed: maphash.MakeSeed()} }

// allow takes a token of src's bucket.
func (l *handshakeLimiter) allow(src netip.Addr, now time.Time) bool {
	a := src.As16()
	i := maphash.Bytes(l.seed, a[:]) % handshakeTables
	l.mu.Lock()
	defer l.mu.Unlock()
	b := &l.buckets[i]
	n := now.UnixNano()
	if b.last == 0 {
		b.tokens = handshakeBurst
	} else {
		b.tokens = min(handshakeBurst, b.tokens+float64(n-b.last)*handshakeRate/float64(time.Second))
	}
	b.last = n
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
