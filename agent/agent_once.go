package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/porthole-dev/porthole/agent/ddns"
)

// ErrDNSNotWritten: -once found DNS wrong but could not write it yet (the
// minimum interval between writes, or a backoff after an error).
var ErrDNSNotWritten = errors.New("DNS not written yet")

// Once runs one detect-and-update pass and writes what was done to w. With a relay
// configured it first connects the tunnel (to learn the relay's view of our address
// and its public address); the direct path is not tried in this mode.
// It returns nil only when DNS is right afterwards: a write deferred to later
// is an error (wrapping ErrDNSNotWritten) that says when it can be done.
func (a *Agent) Once(ctx context.Context, w io.Writer) error {
	if a.updater == nil {
		return errors.New("no ddns section in the config: nothing to do once")
	}
	if a.pm != nil {
		a.pm, a.paths.router, a.paths.repair = nil, nil, nil
		a.paths.directOffWhy = "-once does not try the direct path (no router mapping, no probe): DNS points at the relay"
	}
	if a.tun != nil {
		tctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { a.tun.Run(tctx); close(done) }()
		defer func() { cancel(); <-done }()
		deadline := time.NewTimer(15 * time.Second)
		defer deadline.Stop()
	wait:
		for !a.tun.Status().Connected {
			select {
			case <-a.kick:
				break wait
			case <-deadline.C:
				return fmt.Errorf("tunnel to %s did not come up: %s", a.ac.Relay.Address, a.tun.Status().LastError)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	rep := a.pass(ctx, newPathState(), true)
	os.MkdirAll(a.ac.StateDir, 0o700) // best effort: status is informational
	a.mu.Lock()
	a.status.Once = true
	a.mu.Unlock()
	a.saveStatus() // so `porthole-agent status` can show the last run
	st := a.Status()
	fmt.Fprintf(w, "public address: v4 %s v6 %s\n", orNone(st.PublicV4), orNone(st.PublicV6))
	fmt.Fprintf(w, "path: %s (%s)\n", orNone(st.Path), st.PathWhy)
	if rep.action != "" {
		fmt.Fprintf(w, "dns %s: %s %s (%s)\n", a.ac.DDNS.Hostname, rep.action, rep.target, rep.reason)
	}
	switch {
	case rep.action == string(ddns.ActionDeferred):
		when := "later"
		if !rep.retryAt.IsZero() {
			when = fmt.Sprintf("at %s (in %s)", rep.retryAt.Local().Format(time.RFC3339),
				max(time.Until(rep.retryAt), 0).Round(time.Second))
		}
		return fmt.Errorf("%w: %s should hold %s, but the write waits (%s); it can be written %s: run -once again then, or keep the agent running",
			ErrDNSNotWritten, a.ac.DDNS.Hostname, rep.target, rep.reason, when)
	case !rep.ok:
		return fmt.Errorf("nothing published: %s", rep.reason)
	case !rep.dnsRight:
		return fmt.Errorf("nothing published: %s", rep.reason)
	}
	return nil
}
