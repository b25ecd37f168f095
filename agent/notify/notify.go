// Package notify tells the user when something about the agent changes: the
// path viewers take, the public address, a camera or the tunnel going down and
// coming back, a viewer locked out, a certificate that could not be renewed. It
// sends each event to the targets of notify: in agent.yaml: a webhook (JSON), an
// ntfy topic, or any service shoutrrr knows (Telegram, Pushover, e-mail, ...).
//
// A Notifier never blocks its caller: Notify queues the event (a bounded queue;
// when it is full the event is dropped and counted). Events are rate-limited per
// family (camera, tunnel, path, address, lockout, certificate; DefaultKindBurst
// at once, then one per DefaultKindEvery) and overall (DefaultTotalBurst, then
// one per DefaultTotalEvery). An event over the limit is held back: the latest
// of its family is sent once the limit allows, saying how many were held back,
// so the last word about a camera is always its current state. Each target has
// its own queue and goroutine, so a target that hangs delays only itself; a
// delivery is tried DefaultAttempts times with doubling backoff, and a target
// that keeps failing is logged once, with what to check, until it works again.
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Kind is what happened.
type Kind string

// The kinds of events the agent sends.
const (
	PathChange    Kind = "path_change"    // DNS now sends viewers direct or through the relay
	AddressChange Kind = "address_change" // the home's public address changed
	CameraDown    Kind = "camera_down"    // a service's LAN target stopped answering
	CameraUp      Kind = "camera_up"      // ... and answers again
	TunnelDown    Kind = "tunnel_down"    // the tunnel to the relay is down for more than a minute
	TunnelUp      Kind = "tunnel_up"      // ... and up again
	Lockout       Kind = "viewer_lockout" // too many failed logins from an address or for a name
	CertFailure   Kind = "cert_failure"   // a certificate could not be obtained or renewed
	Test          Kind = "test"           // porthole-agent notify-test
)

// family groups kinds that share a rate limit, so a flapping camera's down
// and up are limited together and the last one held back is its state now.
func (k Kind) family() string {
	switch k {
	case CameraDown, CameraUp:
		return "camera"
	case TunnelDown, TunnelUp:
		return "tunnel"
	}
	return string(k)
}

// Event is one notification.
type Event struct {
	Kind Kind
	// Message is one line a person reads on a phone's lock screen.
	Message string
	// Time is when it happened; zero = when Notify was called.
	Time time.Time
	// Details are machine-readable facts (service, address, reason, ...). The
	// webhook sends them as a JSON object; ntfy and shoutrrr get Message only.
	Details map[string]string
}

// Defaults (see Config).
const (
	DefaultQueue      = 64
	DefaultAttempts   = 4
	DefaultBackoff    = 2 * time.Second
	MaxBackoff        = time.Minute
	DefaultTimeout    = 10 * time.Second
	DefaultKindBurst  = 3
	DefaultKindEvery  = 5 * time.Minute
	DefaultTotalBurst = 10
	DefaultTotalEvery = time.Minute
	DefaultFlushEvery = 15 * time.Second
)

// Target is one place events go.
type Target struct {
	// Type is "webhook", "ntfy" or "shoutrrr".
	Type string
	// URL is the webhook's or ntfy topic's URL, or the shoutrrr service URL.
	// It may hold a secret and is never logged.
	URL string
	// Headers are added to a webhook's POST.
	Headers map[string]string
	// Token is an ntfy access token; "" = none.
	Token string
}

// Config configures a Notifier.
type Config struct {
	// Agent is the agent's name, sent with every event.
	Agent string
	// Targets are where events go. None is valid: Notify then does nothing.
	Targets []Target
	// HTTPClient sends webhook and ntfy requests; nil = http.DefaultClient
	// (each attempt is bounded by Timeout anyway).
	HTTPClient *http.Client
	// Logger gets a failing target's line; nil discards.
	Logger *slog.Logger
	// Now is the clock of the rate limits; nil = time.Now.
	Now func() time.Time
	// Queue bounds the events waiting, in the Notifier and per target;
	// zero = DefaultQueue.
	Queue int
	// Attempts is how often one delivery is tried; zero = DefaultAttempts.
	Attempts int
	// Backoff is the wait before the first retry, doubled each time up to
	// MaxBackoff; zero = DefaultBackoff.
	Backoff time.Duration
	// Timeout bounds one attempt; zero = DefaultTimeout.
	Timeout time.Duration
	// KindBurst events of one family go out at once, then one per
	// KindEvery; TotalBurst and TotalEvery do the same for all events
	// together. Zero = the Default values.
	KindBurst, TotalBurst int
	KindEvery, TotalEvery time.Duration
	// FlushEvery is how often held-back events are looked at; zero =
	// DefaultFlushEvery.
	FlushEvery time.Duration
}

// sender delivers one event to one target.
type sender interface {
	send(ctx context.Context, agent string, e Event) error
	// describe names the target in logs, without secrets.
	describe() string
}

// Notifier queues events and sends them. Create with New, then Run.
type Notifier struct {
	cfg     Config
	log     *slog.Logger
	targets []*target
	in      chan Event

	total *rate.Limiter // owned by the Run goroutine, like kinds and held
	kinds map[string]*rate.Limiter
	held  map[string]*heldBack

	mu      sync.Mutex // guards the fields below
	dropped int        // events Notify could not queue since the last one sent
}

// heldBack is a family's events over the rate limit: the latest, and how many.
type heldBack struct {
	e Event
	n int
}

// New checks cfg (a shoutrrr URL is parsed here) and returns a Notifier.
func New(cfg Config) (*Notifier, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.Queue, DefaultQueue)
	def(&cfg.Attempts, DefaultAttempts)
	def(&cfg.KindBurst, DefaultKindBurst)
	def(&cfg.TotalBurst, DefaultTotalBurst)
	defd(&cfg.Backoff, DefaultBackoff)
	defd(&cfg.Timeout, DefaultTimeout)
	defd(&cfg.KindEvery, DefaultKindEvery)
	defd(&cfg.TotalEvery, DefaultTotalEvery)
	defd(&cfg.FlushEvery, DefaultFlushEvery)
	n := &Notifier{cfg: cfg, log: cfg.Logger, in: make(chan Event, cfg.Queue),
		total: rate.NewLimiter(rate.Every(cfg.TotalEvery), cfg.TotalBurst),
		kinds: map[string]*rate.Limiter{}, held: map[string]*heldBack{}}
	for i, t := range cfg.Targets {
		s, err := newSender(t, cfg)
		if err != nil {
			return nil, fmt.Errorf("notify[%d]: %w", i, err)
		}
		n.targets = append(n.targets, &target{s: s, name: fmt.Sprintf("notify[%d] %s", i, s.describe()),
			q: make(chan Event, cfg.Queue)})
	}
	return n, nil
}

// Check reports what is wrong with t (a shoutrrr URL of an unknown service,
// say) without sending anything; the error never holds the URL.
func Check(t Target) error {
	_, err := newSender(t, Config{Timeout: DefaultTimeout, HTTPClient: http.DefaultClient})
	return err
}

// ErrUnknownType is returned for a Target.Type that is none of the known ones.
var ErrUnknownType = errors.New("unknown notification target type")

func newSender(t Target, cfg Config) (sender, error) {
	switch t.Type {
	case "webhook":
		return newWebhook(t, cfg.HTTPClient)
	case "ntfy":
		return newNtfy(t, cfg.HTTPClient)
	case "shoutrrr":
		return newShoutrrr(t, cfg.Timeout)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownType, t.Type)
}

// Enabled reports whether there is any target; a nil Notifier has none.
func (n *Notifier) Enabled() bool { return n != nil && len(n.targets) > 0 }

// Notify queues e and returns at once; a nil Notifier, or one without
// targets, ignores it. It is safe from any goroutine, even with locks held.
func (n *Notifier) Notify(e Event) {
	if !n.Enabled() {
		return
	}
	if e.Time.IsZero() {
		e.Time = n.cfg.Now()
	}
	select {
	case n.in <- e:
	default:
		n.mu.Lock()
		n.dropped++
		n.mu.Unlock()
	}
}

// Run sends queued events until ctx ends. Events still queued then are
// dropped: a notification is worth a retry, not a delayed shutdown.
func (n *Notifier) Run(ctx context.Context) error {
	if !n.Enabled() {
		<-ctx.Done()
		return nil
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, t := range n.targets {
		wg.Go(func() { n.deliver(ctx, t) })
	}
	tick := time.NewTicker(n.cfg.FlushEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-n.in:
			n.admit(e)
		case <-tick.C:
			n.flush()
		}
	}
}

// admit sends e now if the rate limits allow, else holds it back.
func (n *Notifier) admit(e Event) {
	fam := e.Kind.family()
	if n.allow(fam) {
		held := 0
		if h := n.held[fam]; h != nil {
			held = h.n
			delete(n.held, fam)
		}
		n.dispatch(e, held)
		return
	}
	h := n.held[fam]
	if h == nil {
		h = &heldBack{}
		n.held[fam] = h
	}
	h.e = e
	h.n++
}

// flush sends the latest held-back event of each family the limits now allow.
func (n *Notifier) flush() {
	for _, fam := range slices.Sorted(maps.Keys(n.held)) {
		if !n.allow(fam) {
			continue
		}
		h := n.held[fam]
		delete(n.held, fam)
		n.dispatch(h.e, h.n-1)
	}
}

// allow takes a token of fam's limit and of the overall one when both have one.
func (n *Notifier) allow(fam string) bool {
	now := n.cfg.Now()
	kl := n.kinds[fam]
	if kl == nil {
		kl = rate.NewLimiter(rate.Every(n.cfg.KindEvery), n.cfg.KindBurst)
		n.kinds[fam] = kl
	}
	if kl.TokensAt(now) < 1 || n.total.TokensAt(now) < 1 {
		return false
	}
	return kl.AllowN(now, 1) && n.total.AllowN(now, 1)
}

// dispatch hands e to every target's queue; held is how many events of its
// family were held back before it (they are said in the message and details).
func (n *Notifier) dispatch(e Event, held int) {
	n.mu.Lock()
	dropped := n.dropped
	n.dropped = 0
	n.mu.Unlock()
	if held > 0 || dropped > 0 {
		d := maps.Clone(e.Details)
		if d == nil {
			d = map[string]string{}
		}
		if held > 0 {
			d["held_back"] = strconv.Itoa(held)
			e.Message += fmt.Sprintf(" (%d earlier notification(s) of this kind held back by the rate limit)", held)
		}
		if dropped > 0 {
			d["dropped"] = strconv.Itoa(dropped)
		}
		e.Details = d
	}
	for _, t := range n.targets {
		t.enqueue(e)
	}
}

// target is one Target's queue and state, owned by its deliver goroutine.
type target struct {
	s       sender
	name    string
	q       chan Event
	failing bool // the last delivery failed (logged once until one succeeds)
}

// enqueue adds e, dropping the oldest waiting event when the queue is full:
// the newest says best what the state is now. Only the Run goroutine calls it.
func (t *target) enqueue(e Event) {
	for {
		select {
		case t.q <- e:
			return
		default:
		}
		select {
		case <-t.q:
		default:
		}
	}
}

func (n *Notifier) deliver(ctx context.Context, t *target) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-t.q:
			err := n.sendWithRetry(ctx, t, e)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil && !t.failing:
				t.failing = true
				n.log.Warn("notification target failing: events are not getting through (logged once until it works again)",
					"target", t.name, "event", string(e.Kind), "err", err, "fix", fixFor(err))
			case err != nil:
				n.log.Debug("notification target still failing", "target", t.name, "err", err)
			case t.failing:
				t.failing = false
				n.log.Info("notification target works again", "target", t.name)
			}
		}
	}
}

// sendWithRetry tries e up to Attempts times, each bounded by Timeout.
func (n *Notifier) sendWithRetry(ctx context.Context, t *target, e Event) error {
	wait := n.cfg.Backoff
	var err error
	for i := 0; i < n.cfg.Attempts; i++ {
		if i > 0 {
			tm := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				tm.Stop()
				return ctx.Err()
			case <-tm.C:
			}
			wait = min(2*wait, MaxBackoff)
		}
		actx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
		err = t.s.send(actx, n.cfg.Agent, e)
		cancel()
		if err == nil || errors.Is(err, errPermanent) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// errPermanent marks an answer a retry cannot change (a 4xx but 408 and 429).
var errPermanent = errors.New("refused")

// StatusError is a target's HTTP answer other than 2xx.
type StatusError struct {
	Code int
	Body string // the start of the answer's body, for the log
}

func (e *StatusError) Error() string {
	s := "HTTP " + strconv.Itoa(e.Code)
	if e.Body != "" {
		s += ": " + e.Body
	}
	return s
}

// Unwrap makes a 4xx answer (but 408 and 429) errPermanent.
func (e *StatusError) Unwrap() error {
	if e.Code >= 400 && e.Code < 500 && e.Code != http.StatusRequestTimeout && e.Code != http.StatusTooManyRequests {
		return errPermanent
	}
	return nil
}

// fixFor says what to check for err.
func fixFor(err error) string {
	var se *StatusError
	switch {
	case errors.As(err, &se) && (se.Code == http.StatusUnauthorized || se.Code == http.StatusForbidden):
		return "the target refuses the credentials: check the token (token/token_file), headers or URL in notify:"
	case errors.As(err, &se) && se.Code == http.StatusNotFound:
		return "the URL is not found at the server: check url in notify:"
	case errors.As(err, &se):
		return "the server answered an error: check its own logs, and url in notify:"
	case errors.Is(err, context.DeadlineExceeded):
		return "the target did not answer in time: is the server up and reachable from the agent?"
	}
	return "check that the agent can reach the target (DNS, firewall, proxy) and that url in notify: is right"
}

// Result is one target's answer to SendNow.
type Result struct {
	// Target names the target without secrets ("notify[0] ntfy at ntfy.sh").
	Target string
	// Err is nil when the target took the event.
	Err error
	// Fix says what to check when Err is set.
	Fix string
}

// SendNow sends e to every target at once, one attempt each bounded by
// Timeout, past the queue and the rate limits, and says how each went: for
// `porthole-agent notify-test`. Run need not be running.
func (n *Notifier) SendNow(ctx context.Context, e Event) []Result {
	if n == nil {
		return nil
	}
	if e.Time.IsZero() {
		e.Time = n.cfg.Now()
	}
	out := make([]Result, len(n.targets))
	var wg sync.WaitGroup
	for i, t := range n.targets {
		wg.Go(func() {
			actx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
			defer cancel()
			out[i] = Result{Target: t.name, Err: t.s.send(actx, n.cfg.Agent, e)}
			if out[i].Err != nil {
				out[i].Fix = fixFor(out[i].Err)
			}
		})
	}
	wg.Wait()
	return out
}
