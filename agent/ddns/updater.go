package ddns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// UpdaterConfig configures an Updater. Zero values take the documented defaults.
type UpdaterConfig struct {
	// Provider holds the records. Required.
	Provider Provider
	// Hostname is the name whose A/AAAA records are managed. Required.
	Hostname string
	// TTL of written records. Default 60s.
	TTL time.Duration
	// MinInterval is the least time between two writes. Default 1m.
	MinInterval time.Duration
	// VerifyInterval is how often the provider's records are read back in
	// steady state (they are also read on the first Update and after a
	// write or a failed write). Default 1h. Write-only providers are never read.
	VerifyInterval time.Duration
	// BackoffMin and BackoffMax bound the jittered exponential backoff
	// after errors. Defaults 30s and 30m. A server's Retry-After (and the
	// dyndns2 911 rule of 30 minutes) can lengthen it.
	BackoffMin, BackoffMax time.Duration
	// StateDir keeps StateFile. Empty = in memory only. If it can't be
	// written the updater logs it once and keeps working in memory.
	StateDir string
	// Logger; nil = discard.
	Logger *slog.Logger
	// Now is the clock; nil = time.Now.
	Now func() time.Time
	// Rand returns a number in [0,1) for jitter; nil = math/rand/v2.Float64.
	Rand func() float64
}

// Action says what an Update did.
type Action string

const (
	// ActionUnchanged: the records already were as wanted; nothing written.
	ActionUnchanged Action = "unchanged"
	// ActionUpdated: the records were written.
	ActionUpdated Action = "updated"
	// ActionDeferred: a write is needed but must wait (minimum interval,
	// backoff) or the attempt failed and will be retried after RetryAt.
	ActionDeferred Action = "deferred"
	// ActionSkipped: nothing was attempted (nothing to publish, invalid
	// input, or updates stopped after a fatal answer).
	ActionSkipped Action = "skipped"
)

// Outcome is the result of one Update.
type Outcome struct {
	Action Action
	// Reason explains Action in a few words.
	Reason string
	// Published is what the provider is believed to serve afterwards.
	Published Records
	// RetryAt is, for deferred outcomes, the earliest time a write will be tried.
	RetryAt time.Time
}

// Status is the updater's state for the status command.
type Status struct {
	Hostname  string
	Provider  string
	Published Records
	// LastWrite is when records were last written (possibly by an earlier run).
	LastWrite time.Time
	// LastVerify is when the provider was last read by this run; zero if never.
	LastVerify time.Time
	// LastError is the last failure's text, "" after a success.
	LastError string
	// NextAttempt is the end of the current backoff, zero if none.
	NextAttempt time.Time
	// Stopped is set when a fatal answer stopped writes until restart.
	Stopped bool
	// StateSaved is false while the state file can't be written.
	StateSaved bool
}

// ErrStopped is returned by Update once a fatal provider answer stopped updates.
var ErrStopped = errors.New("ddns updates stopped")

// Updater keeps one hostname's records equal to what the agent wants,
// writing only when needed. It is safe for concurrent use.
type Updater struct {
	cfg  UpdaterConfig
	host string
	log  *slog.Logger

	opMu sync.Mutex // serializes Update and Delete, which call the provider

	mu           sync.Mutex // guards the fields below
	known        Records    // what the provider is believed to serve
	lastWrite    time.Time
	lastVerify   time.Time
	verifyNeeded bool
	writeOnly    bool // the provider can't be read (Capabilities, or Get said ErrUnsupported)
	failures     int
	nextAttempt  time.Time
	fatal        error
	lastErr      error
	stateFailing bool // state file unwritable; logged once
}

// New checks cfg, loads the state file if there is one and returns an Updater.
func New(cfg UpdaterConfig) (*Updater, error) {
	if cfg.Provider == nil {
		return nil, fmt.Errorf("%w: no provider", ErrBadConfig)
	}
	host := normHost(cfg.Hostname)
	if err := validHostname(host); err != nil {
		return nil, err
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 60 * time.Second
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = time.Minute
	}
	if cfg.VerifyInterval <= 0 {
		cfg.VerifyInterval = time.Hour
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 30 * time.Second
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = max(30*time.Minute, cfg.BackoffMin)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	u := &Updater{
		cfg:  cfg,
		host: host,
		log:  cfg.Logger.With("hostname", host, "provider", cfg.Provider.Name()),
		// A write-only provider is never read: the state file is all we know.
		writeOnly: !cfg.Provider.Capabilities().Read,
	}
	if cfg.StateDir != "" {
		s, ok, err := readState(cfg.StateDir)
		switch {
		case err != nil:
			u.log.Warn("ddns state file unusable; starting without it", "err", err)
		case !ok:
		case s.Hostname != host || s.Provider != cfg.Provider.Name():
			u.log.Info("ddns state file is for another hostname or provider; ignoring it",
				"state_hostname", s.Hostname, "state_provider", s.Provider)
		default:
			u.known, u.lastWrite = s.Published, s.UpdatedAt
		}
	}
	return u, nil
}

// Update makes the provider serve want, if it doesn't already.
//
// Per family, a valid address is published, NoV4/NoV6 removes the record,
// and a zero address with No unset leaves the record as it is: that is what
// the caller passes when detection failed or was ambiguous. Update never
// writes when the records already match: it trusts what it last published
// (kept in the state file) and reads the provider back only on the first
// call, after writes and every VerifyInterval. Writes are at least
// MinInterval apart; errors back off with jitter; fatal answers (bad
// credentials, unknown host, abuse) stop writes until restart.
//
// The error is non-nil when an attempt failed or updates are stopped; the
// Outcome says what happened either way.
func (u *Updater) Update(ctx context.Context, want Records) (Outcome, error) {
	u.opMu.Lock()
	defer u.opMu.Unlock()

	if err := want.Validate(); err != nil {
		u.log.Error("ddns: refusing to publish invalid records", "want", want, "err", err)
		return u.outcome(ActionSkipped, err.Error(), time.Time{}), err
	}
	if want.IsZero() {
		return u.outcome(ActionSkipped, "nothing to publish", time.Time{}), nil
	}
	now := u.cfg.Now()

	u.mu.Lock()
	fatal, next := u.fatal, u.nextAttempt
	verify := !u.writeOnly && (u.lastVerify.IsZero() || u.verifyNeeded || now.Sub(u.lastVerify) >= u.cfg.VerifyInterval)
	u.mu.Unlock()

	if fatal != nil {
		return u.outcome(ActionSkipped, "updates stopped: "+fatal.Error(), time.Time{}), fmt.Errorf("%w: %w", ErrStopped, fatal)
	}
	if now.Before(next) {
		return u.outcome(ActionDeferred, "backing off after an error", next), nil
	}

	if verify {
		got, err := u.cfg.Provider.Get(ctx, u.host)
		switch {
		case errors.Is(err, ErrUnsupported):
			u.mu.Lock()
			u.writeOnly = true
			u.mu.Unlock()
		case err != nil:
			return u.failed(ctx, now, "read", err)
		default:
			u.mu.Lock()
			changed := got != u.known
			u.known, u.lastVerify, u.verifyNeeded = got, now, false
			u.mu.Unlock()
			if changed {
				u.log.Info("ddns: provider records read", "records", got)
				u.saveState()
			}
		}
	}

	u.mu.Lock()
	known, lastWrite := u.known, u.lastWrite
	u.mu.Unlock()
	if known.Satisfies(want) {
		u.succeeded()
		u.log.Debug("ddns: records unchanged", "records", known)
		return u.outcome(ActionUnchanged, "records already as wanted", time.Time{}), nil
	}
	if !lastWrite.IsZero() && now.Sub(lastWrite) < u.cfg.MinInterval && !lastWrite.After(now) {
		at := lastWrite.Add(u.cfg.MinInterval)
		u.log.Debug("ddns: change waits for the minimum interval", "want", want, "retry_at", at)
		return u.outcome(ActionDeferred, "minimum interval between writes", at), nil
	}

	if err := u.cfg.Provider.Set(ctx, u.host, want, u.cfg.TTL); err != nil {
		return u.failed(ctx, now, "write", err)
	}
	u.mu.Lock()
	u.known = known.apply(want)
	u.lastWrite = now
	u.verifyNeeded = true
	published := u.known
	u.mu.Unlock()
	u.succeeded()
	u.log.Info("ddns: records updated", "records", published, "previous", known)
	u.saveState()
	return u.outcome(ActionUpdated, "records written", time.Time{}), nil
}

// Delete removes the hostname's A and AAAA records, for delete-on-exit.
// Pass a context that is still live (the agent's is usually cancelled by
// then). Returns an error wrapping ErrUnsupported for providers that
// can't delete.
func (u *Updater) Delete(ctx context.Context) error {
	u.opMu.Lock()
	defer u.opMu.Unlock()
	u.mu.Lock()
	fatal := u.fatal
	u.mu.Unlock()
	if fatal != nil {
		return fmt.Errorf("%w: %w", ErrStopped, fatal)
	}
	if !u.cfg.Provider.Capabilities().Delete {
		return fmt.Errorf("ddns: delete records of %s: %s can't delete records: %w", u.host, u.cfg.Provider.Name(), ErrUnsupported)
	}
	if err := u.cfg.Provider.Delete(ctx, u.host); err != nil {
		u.log.Warn("ddns: could not delete records", "err", err)
		return fmt.Errorf("ddns: delete records of %s: %w", u.host, err)
	}
	u.mu.Lock()
	u.known = Records{NoV4: true, NoV6: true}
	u.lastWrite = u.cfg.Now()
	u.verifyNeeded = true
	u.mu.Unlock()
	u.log.Info("ddns: records deleted")
	u.saveState()
	return nil
}

// Status reports the updater's state.
func (u *Updater) Status() Status {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := Status{
		Hostname:    u.host,
		Provider:    u.cfg.Provider.Name(),
		Published:   u.known,
		LastWrite:   u.lastWrite,
		LastVerify:  u.lastVerify,
		NextAttempt: u.nextAttempt,
		Stopped:     u.fatal != nil,
		StateSaved:  !u.stateFailing,
	}
	if u.lastErr != nil {
		s.LastError = u.lastErr.Error()
	}
	return s
}

func (u *Updater) outcome(a Action, reason string, retryAt time.Time) Outcome {
	u.mu.Lock()
	defer u.mu.Unlock()
	return Outcome{Action: a, Reason: reason, Published: u.known, RetryAt: retryAt}
}

func (u *Updater) succeeded() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.failures, u.nextAttempt, u.lastErr = 0, time.Time{}, nil
}

// failed records a failed provider call and decides when to try again.
func (u *Updater) failed(ctx context.Context, now time.Time, op string, err error) (Outcome, error) {
	if ctx.Err() != nil {
		// Shutting down: not the provider's fault, no backoff.
		return u.outcome(ActionDeferred, "cancelled", time.Time{}), err
	}
	u.mu.Lock()
	u.lastErr = err
	u.verifyNeeded = true // a failed write may have half happened
	if errors.Is(err, ErrRejected) || errors.Is(err, ErrBadConfig) {
		u.fatal = err
		u.mu.Unlock()
		u.log.Error("ddns: provider refused; updates stopped until the configuration is fixed and the agent restarted",
			"op", op, "err", err)
		return u.outcome(ActionSkipped, "updates stopped: "+err.Error(), time.Time{}), err
	}
	u.failures++
	d := u.cfg.BackoffMin << min(u.failures-1, 20)
	if d > u.cfg.BackoffMax || d <= 0 {
		d = u.cfg.BackoffMax
	}
	d = d/2 + time.Duration(u.cfg.Rand()*float64(d/2))
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) && ra.RetryAfter() > d {
		d = ra.RetryAfter()
	}
	if he, ok := errorsAsHTTP(err); ok && he.Auth() || errors.Is(err, ErrUnknownZone) {
		// Needs a human; ask rarely.
		d = max(d, u.cfg.BackoffMax)
	}
	u.nextAttempt = now.Add(d)
	u.mu.Unlock()
	u.log.Warn("ddns: provider call failed; will retry",
		"op", op, "err", err, "retry_in", d.Round(time.Second))
	return u.outcome(ActionDeferred, op+" failed: "+err.Error(), now.Add(d)), err
}

// saveState writes the state file if a state dir is configured.
func (u *Updater) saveState() {
	if u.cfg.StateDir == "" {
		return
	}
	u.mu.Lock()
	s := State{Version: stateVersion, Hostname: u.host, Provider: u.cfg.Provider.Name(),
		Published: u.known, UpdatedAt: u.lastWrite}
	u.mu.Unlock()
	err := writeState(u.cfg.StateDir, s)
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case err != nil && !u.stateFailing:
		u.stateFailing = true
		u.log.Warn("ddns: state file can't be written; keeping state in memory (after a restart the provider is read, or written once)",
			"dir", u.cfg.StateDir, "err", err)
	case err == nil && u.stateFailing:
		u.stateFailing = false
		u.log.Info("ddns: state file writable again", "dir", u.cfg.StateDir)
	}
}

// Capabilities is what the provider can do (see Provider.Capabilities).
func (u *Updater) Capabilities() Capabilities { return u.cfg.Provider.Capabilities() }
