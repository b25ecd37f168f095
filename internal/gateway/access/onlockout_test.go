package access

import (
	"context"
	"errors"
	"testing"
	"time"
)

// OnLockout hears each lockout once, like the audit log.
func TestOnLockout(t *testing.T) {
	var got []Lockout
	s, _, _ := newStore(t, func(c *Config) { c.OnLockout = func(l Lockout) { got = append(got, l) } })
	ctx := context.Background()
	for range sourcePolicy.free {
		if _, _, err := s.Login(ctx, "alice", "nope", src1); err != ErrBadLogin {
			t.Fatalf("%v, want a plain failure", err)
		}
	}
	for range 3 {
		if _, _, err := s.Login(ctx, "alice", "nope", src1); !errors.Is(err, ErrLockedOut) {
			t.Fatalf("%v, want locked out", err)
		}
	}
	if len(got) != 1 || got[0].Source != src1 || got[0].Name != "" || got[0].RetryAfter != time.Second {
		t.Errorf("OnLockout got %+v, want one lockout of %s for 1s", got, src1)
	}
}
