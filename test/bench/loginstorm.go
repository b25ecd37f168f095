package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/porthole-dev/porthole/internal/gateway/access"
)

// The login storm's addresses: the attacker's and the viewer's.
var (
	stormSource = net.IPv4(127, 0, 0, 51)
	legitSource = net.IPv4(127, 0, 0, 61)
)

// quietLogins is how many logins of the viewer are timed without a storm.
const quietLogins = 5

// stormAnswers counts the storm's answers.
type stormAnswers struct {
	unauthorized, tooMany, other, errs atomic.Int64
}

func (a *stormAnswers) String() string {
	return fmt.Sprintf("401 x%d, 429 x%d, other x%d, errors x%d", a.unauthorized.Load(), a.tooMany.Load(), a.other.Load(), a.errs.Load())
}

// LoginStorm sends attempts wrong-password logins (the viewer's own name)
// from one address, parallel at once, through the relay to the agent's
// https service, while the viewer logs in again and again from another
// address, each login on a new TLS connection. It reports the viewer's login
// time (handshake included) during the storm beside the same without one,
// and how the storm was answered (401: a password was checked; 429: the
// address is locked out).
func LoginStorm(ctx context.Context, bins Bins, attempts, parallel int) []Figure {
	names := []string{fmt.Sprintf("login storm (%d wrong, %d at once): viewer's login max", attempts, parallel),
		"login storm: viewer's login p50"}
	fail := func(err error) []Figure { return []Figure{errorFigure(names[0], err), errorFigure(names[1], err)} }
	hash, err := access.HashPassword(benchPassword)
	if err != nil {
		return fail(err)
	}
	// no backend: a login never reaches it
	st, err := startWebStack(ctx, bins, []webService{{name: "web", kind: "http", target: "127.0.0.1:9"}}, []string{"alice"}, hash)
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	base := "https://" + st.addr("web")
	legit := st.client(legitSource, false)
	loginOnce := func() (time.Duration, error) {
		start := time.Now()
		status, cookie, err := login(ctx, legit, base, "alice", benchPassword)
		took := time.Since(start)
		if err == nil && (status != http.StatusSeeOther || cookie == nil) {
			err = fmt.Errorf("bench: viewer's login answered %d", status)
		}
		return took, err
	}
	var quiet []time.Duration
	for range quietLogins + 1 {
		t, err := loginOnce()
		if err != nil {
			return fail(err)
		}
		quiet = append(quiet, t)
	}
	quiet = quiet[1:] // the first one warms the agent's argon2 memory

	var answers stormAnswers
	var next atomic.Int64
	stormDone := make(chan struct{})
	stormStart := time.Now()
	var stormTook time.Duration
	go func() {
		defer close(stormDone)
		c := st.client(stormSource, true)
		var wg sync.WaitGroup
		for range parallel {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(attempts) && ctx.Err() == nil {
					status, _, err := login(ctx, c, base, "alice", "wrong password")
					switch {
					case err != nil:
						answers.errs.Add(1)
					case status == http.StatusUnauthorized:
						answers.unauthorized.Add(1)
					case status == http.StatusTooManyRequests:
						answers.tooMany.Add(1)
					default:
						answers.other.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		stormTook = time.Since(stormStart)
	}()
	var during []time.Duration
	var failed int
	var firstErr error
	for stormOver := false; !stormOver; {
		select {
		case <-stormDone:
			stormOver = true
			continue
		default:
		}
		t, err := loginOnce()
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		during = append(during, t)
	}
	if len(during) == 0 && failed == 0 {
		// the storm ended before one login: time one right after it
		t, err := loginOnce()
		if err != nil {
			failed, firstErr = 1, err
		} else {
			during = append(during, t)
		}
	}
	worst := percentile(during, 100)
	note := fmt.Sprintf("%d viewer logins during the storm (%.1f s), %d failed; without a storm: p50 %.0f ms, max %.0f ms (%d logins); storm answers: %s; each login a new TLS connection through the relay (handshake included)",
		len(during), stormTook.Seconds(), failed, millis(percentile(quiet, 50)), millis(percentile(quiet, 100)), len(quiet), &answers)
	if firstErr != nil {
		note += "; first failure: " + firstErr.Error()
	}
	return []Figure{
		{Name: names[0], Value: millis(worst), Unit: "ms", Direct: millis(percentile(quiet, 100)), Ratio: float64(worst) / float64(max(percentile(quiet, 100), 1)),
			Target: "each login < 1 s", Pass: failed == 0 && len(during) > 0 && worst < time.Second, Note: note},
		{Name: names[1], Value: millis(percentile(during, 50)), Unit: "ms", Direct: millis(percentile(quiet, 50)),
			Ratio: float64(percentile(during, 50)) / float64(max(percentile(quiet, 50), 1)), Note: "DIRECT = the same viewer's logins without a storm, same run"},
	}
}
