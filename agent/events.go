package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/porthole-dev/porthole/agent/notify"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway/access"
)

// What the agent tells the user through notify: (see agent/notify), and how
// often it looks.
const (
	// TunnelDownAfter is how long the tunnel must be down before it is said:
	// a relay restart or a short outage says nothing.
	TunnelDownAfter = time.Minute
	// CameraCheckEvery is how often each service's LAN target gets a TCP
	// connect while notifications are on; CameraDownAfter failed checks in a
	// row say it is down, CameraUpAfter good ones that it is back.
	CameraCheckEvery = 30 * time.Second
	CameraDownAfter  = 2
	CameraUpAfter    = 2
	// eventPoll is how often the status is compared with the last one.
	eventPoll = 5 * time.Second
)

// newNotifier builds the Notifier of ac's notify: list; nil without one.
func newNotifier(ac *config.Agent, cfg Config) (*notify.Notifier, error) {
	if len(ac.Notify) == 0 {
		return nil, nil
	}
	n, err := notify.New(notify.Config{Agent: ac.Name, Targets: notifyTargets(ac.Notify),
		Logger: cfg.Logger.With("part", "notify"), HTTPClient: cfg.HTTPClient})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return n, nil
}

func notifyTargets(ts []config.NotifyTarget) []notify.Target {
	out := make([]notify.Target, len(ts))
	for i, t := range ts {
		out[i] = notify.Target{Type: t.Type, URL: t.URL, Headers: t.Headers, Token: t.Token}
	}
	return out
}

// NotifyProblems checks what config loading cannot: whether shoutrrr knows
// each shoutrrr URL. Each problem is "file:line: notify[i].url: what".
func NotifyProblems(ac *config.Agent, file string) []string {
	var out []string
	for i, t := range ac.Notify {
		if err := notify.Check(notifyTargets([]config.NotifyTarget{t})[0]); err != nil {
			out = append(out, fmt.Sprintf("%s:%d: notify[%d].%s", file, t.Line, i, err))
		}
	}
	return out
}

// lockoutEvent is the notification of a viewer lockout.
func lockoutEvent(l access.Lockout) notify.Event {
	d := map[string]string{"retry_after": l.RetryAfter.Round(time.Second).String()}
	who := "for the name " + fmt.Sprintf("%q", l.Name)
	if l.Source.IsValid() {
		who = "from " + l.Source.String()
		d["source"] = l.Source.String()
	} else {
		d["name"] = l.Name
	}
	return notify.Event{Kind: notify.Lockout, Details: d,
		Message: fmt.Sprintf("viewer logins %s locked out after repeated failures (next try in %s); the audit log has the details",
			who, d["retry_after"])}
}

// certEvent is the notification of a failure to obtain or renew the certificate.
func certEvent(hosts []string, err error) notify.Event {
	return notify.Event{Kind: notify.CertFailure, Details: map[string]string{"error": err.Error()},
		Message: fmt.Sprintf("the TLS certificate for %s could not be obtained or renewed (%s); viewers keep the current one, and it is retried",
			strings.Join(hosts, ", "), err)}
}

// eventWatch turns successive statuses into events. Only watchEvents uses it.
type eventWatch struct {
	prev      Status
	started   bool
	tunnel    bool      // the agent has a tunnel to watch
	downSince time.Time // the tunnel is down since; zero while it is up
	reported  bool      // TunnelDown was sent for this outage
}

func knownPath(p string) bool { return p == "direct" || p == "relay" || p == "home" }

// step compares st with the previous status.
func (w *eventWatch) step(st Status, now time.Time) []notify.Event {
	var out []notify.Event
	prev := w.prev
	w.prev = st
	first := !w.started
	w.started = true
	if !first && knownPath(prev.Path) && knownPath(st.Path) && prev.Path != st.Path {
		where := map[string]string{"direct": "directly to the home", "relay": "through the relay", "home": "to the home"}[st.Path]
		out = append(out, notify.Event{Kind: notify.PathChange,
			Details: map[string]string{"from": prev.Path, "to": st.Path, "reason": st.PathWhy},
			Message: fmt.Sprintf("viewers now go %s (was %s): %s", where, prev.Path, st.PathWhy)})
	}
	for _, f := range [][3]string{{"IPv4", prev.PublicV4, st.PublicV4}, {"IPv6", prev.PublicV6, st.PublicV6}} {
		if !first && f[1] != "" && f[2] != "" && f[1] != f[2] {
			out = append(out, notify.Event{Kind: notify.AddressChange,
				Details: map[string]string{"family": f[0], "from": f[1], "to": f[2]},
				Message: fmt.Sprintf("the home's public %s address changed from %s to %s", f[0], f[1], f[2])})
		}
	}
	if !w.tunnel {
		return out
	}
	switch {
	case !st.Tunnel.Connected && w.downSince.IsZero():
		w.downSince = now
	case !st.Tunnel.Connected && !w.reported && now.Sub(w.downSince) >= TunnelDownAfter:
		w.reported = true
		d := map[string]string{"relay": st.Tunnel.Relay, "since": w.downSince.UTC().Format(time.RFC3339)}
		msg := fmt.Sprintf("the tunnel to the relay %s is down for %s", st.Tunnel.Relay, now.Sub(w.downSince).Round(time.Second))
		if st.Tunnel.LastError != "" {
			d["error"] = st.Tunnel.LastError
			msg += ": " + st.Tunnel.LastError
		}
		out = append(out, notify.Event{Kind: notify.TunnelDown, Details: d,
			Message: msg + "; viewers on the relay path cannot connect (porthole-agent doctor checks the way to the relay)"})
	case st.Tunnel.Connected:
		if w.reported {
			out = append(out, notify.Event{Kind: notify.TunnelUp, Details: map[string]string{"relay": st.Tunnel.Relay},
				Message: fmt.Sprintf("the tunnel to the relay %s is up again after %s", st.Tunnel.Relay, now.Sub(w.downSince).Round(time.Second))})
		}
		w.downSince, w.reported = time.Time{}, false
	}
	return out
}

// watchEvents sends the events that show in the status (path, public
// address, tunnel) until ctx ends.
func (a *Agent) watchEvents(ctx context.Context) error {
	w := &eventWatch{tunnel: a.tun != nil}
	t := time.NewTicker(eventPoll)
	defer t.Stop()
	for {
		for _, e := range w.step(a.Status(), time.Now()) {
			a.notifier.Notify(e)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// camState is the hysteresis of one camera's checks.
type camState struct {
	known, up bool
	run       int // checks in a row that disagree with up
}

// observe records a check; it reports whether the camera's state flipped.
// The first state is known after CameraUpAfter good or CameraDownAfter bad
// checks; only a flip from a known state is an event, but a camera that is
// down from the start is one too.
func (c *camState) observe(ok bool) (flipped bool) {
	if c.known && ok == c.up {
		c.run = 0
		return false
	}
	c.run++
	need := CameraDownAfter
	if ok {
		need = CameraUpAfter
	}
	if c.run < need {
		return false
	}
	wasKnown := c.known
	c.known, c.up, c.run = true, ok, 0
	return wasKnown || !ok
}

// camTarget is one LAN target and the services that use it.
type camTarget struct {
	addr     string
	services []string
	state    camState
}

func (a *Agent) camTargets() []*camTarget {
	var out []*camTarget
	byAddr := map[string]*camTarget{}
	for _, s := range a.ac.Services {
		if s.Target == "" {
			continue
		}
		c := byAddr[s.Target]
		if c == nil {
			c = &camTarget{addr: s.Target}
			byAddr[s.Target] = c
			out = append(out, c)
		}
		c.services = append(c.services, s.Name)
	}
	return out
}

// checkCameras connects to each service's LAN target every CameraCheckEvery
// and sends camera down/up events, until ctx ends.
func (a *Agent) checkCameras(ctx context.Context) error {
	cams := a.camTargets()
	if len(cams) == 0 {
		return nil
	}
	t := time.NewTicker(a.camEvery)
	defer t.Stop()
	for {
		for _, c := range cams {
			err := a.probeCamera(ctx, c.addr)
			if ctx.Err() != nil {
				return nil
			}
			if !c.state.observe(err == nil) {
				continue
			}
			names := strings.Join(slices.Clone(c.services), ", ")
			d := map[string]string{"services": names, "target": c.addr}
			if err != nil {
				d["error"] = err.Error()
				a.notifier.Notify(notify.Event{Kind: notify.CameraDown, Details: d,
					Message: fmt.Sprintf("camera %s (%s) is not answering: %s; check its power and network cable, or its address in services:", names, c.addr, err)})
			} else {
				a.notifier.Notify(notify.Event{Kind: notify.CameraUp, Details: d,
					Message: fmt.Sprintf("camera %s (%s) answers again", names, c.addr)})
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// probeCamera is one check: a TCP connect, closed at once.
func (a *Agent) probeCamera(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := a.dialCamera(ctx, "tcp", addr)
	if err != nil {
		if oe := (*net.OpError)(nil); errors.As(err, &oe) && oe.Err != nil {
			return oe.Err // "connection refused", without the addresses said already
		}
		return err
	}
	return conn.Close()
}

// SendTestNotification sends a test event to each target of ac's notify:
// list at once and returns how each went (porthole-agent notify-test).
func SendTestNotification(ctx context.Context, ac *config.Agent) ([]notify.Result, error) {
	if len(ac.Notify) == 0 {
		return nil, errors.New("no notify: targets in the config")
	}
	n, err := newNotifier(ac, Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	return n.SendNow(ctx, notify.Event{Kind: notify.Test,
		Message: "a test notification from porthole-agent " + ac.Name + ": this target works"}), nil
}
