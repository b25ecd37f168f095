package publicip

import (
	"math/rand/v2"
	"time"
)

// Jitter returns d moved by a random amount within ±10%, so many agents
// started together don't query the echo services in step. r nil uses the
// global source.
func Jitter(d time.Duration, r *rand.Rand) time.Duration {
	span := int64(d / 5) // the full ±10% range
	if span <= 0 {
		return d
	}
	var n int64
	if r != nil {
		n = r.Int64N(span + 1)
	} else {
		n = rand.Int64N(span + 1)
	}
	return d - time.Duration(span/2) + time.Duration(n)
}
