package publicip

import (
	"context"
	"log/slog"
	"time"
)

// WatcherConfig configures a Watcher.
type WatcherConfig struct {
	// Logger; nil discards.
	Logger *slog.Logger
	// Coalesce is how long a burst of changes is gathered into one signal
	// (DAD, several addresses at once). Default 200 ms.
	Coalesce time.Duration
	// Events replaces the kernel subscription (tests): each receive is one
	// change. Nil: rtnetlink address notifications on Linux.
	Events <-chan struct{}
}

// Watcher signals when a global address on this host appears or goes away,
// so the agent re-checks the public address at once instead of at the next
// interval.
type Watcher struct {
	cfg WatcherConfig
	log *slog.Logger
	c   chan struct{}
}

// NewWatcher returns a Watcher; see WatcherConfig for defaults.
func NewWatcher(cfg WatcherConfig) *Watcher {
	if cfg.Coalesce <= 0 {
		cfg.Coalesce = 200 * time.Millisecond
	}
	return &Watcher{cfg: cfg, log: logger(cfg.Logger), c: make(chan struct{}, 1)}
}

// C receives one value per coalesced burst of changes. It holds at most one
// pending signal: a slow reader misses no change, it sees several as one.
func (w *Watcher) C() <-chan struct{} { return w.c }

// Run watches until ctx ends and then returns nil. Where address
// notifications are unavailable (not Linux, no netlink) it logs once and
// returns nil: the interval check still runs.
func (w *Watcher) Run(ctx context.Context) error {
	events := w.cfg.Events
	if events == nil {
		ev, stop, err := subscribeAddrChanges()
		if err != nil {
			w.log.Warn("publicip: cannot watch local address changes; relying on the periodic check", "err", err)
			return nil
		}
		defer stop()
		events = ev
	}
	var (
		timer *time.Timer
		fire  <-chan time.Time
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-events:
			if !ok {
				w.log.Warn("publicip: local address watch ended; relying on the periodic check")
				return nil
			}
			if timer == nil {
				timer = time.NewTimer(w.cfg.Coalesce)
				fire = timer.C
			}
		case <-fire:
			timer, fire = nil, nil
			w.log.Debug("publicip: local address changed")
			select {
			case w.c <- struct{}{}:
			default: // a signal is already pending
			}
		}
	}
}
