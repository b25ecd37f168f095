package publicip

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Errors in Result.V4Err / V6Err that callers branch on.
var (
	// ErrNoConsensus: valid answers came in, but fewer than MinAgree sources
	// agree on one address, or two addresses tie. Nothing may be published.
	ErrNoConsensus = errors.New("no consensus on the public address")
	// ErrNoValidAnswer: no source gave a valid address for the family (no
	// connectivity for it, or every answer was rejected).
	ErrNoValidAnswer = errors.New("no source gave a valid address")
)

// Config configures a Detector. The zero value of each field is its default.
type Config struct {
	// Sources are asked in parallel on each Detect. Required.
	Sources []Source
	// MinAgree is how many sources must agree before an address is reported;
	// sources of one operator (see Operated) count once. Default (0) 2. 1
	// trusts a single source: only for tests and labs.
	MinAgree int
	// Accept lists prefixes accepted although not global unicast (labs,
	// tests). Nil: only global unicast addresses count.
	Accept []netip.Prefix
	// Logger; nil discards.
	Logger *slog.Logger
	// Timeout bounds each lookup. Default 5 s.
	Timeout time.Duration
	// Settle is how long Detect keeps waiting for slow sources once MinAgree
	// sources agree (and no other address has as many votes), so one hanging
	// echo service can't delay a change by the full Timeout. The wait also
	// ends as soon as the outcome can no longer change. Default 300 ms;
	// negative waits for every source (up to Timeout).
	Settle time.Duration
	// IPv6 turns on IPv6 detection. False: IPv4 only.
	IPv6 bool
	// IPv6InterfaceID, when valid, replaces the low 64 bits of the detected
	// IPv6 address, to publish a device's own address in the home's prefix.
	// Zero: the detected address as it is.
	IPv6InterfaceID netip.Addr
	// LocalAddrs lists this host's addresses, used to publish a stable IPv6
	// address of the detected prefix rather than a temporary one. Nil:
	// LocalAddrs (netlink on Linux).
	LocalAddrs func() ([]LocalAddr, error)
	// Router names the source (among Sources) that reports the router's
	// external address; its IPv4 answer, valid or not, classifies the NAT.
	// Empty: no classification (Result.NAT is NATUnknown).
	Router string
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// Answer is what one source said for one family.
type Answer struct {
	Source string
	// Operator runs the source (see Operated); one operator is one vote.
	Operator string
	Family   Family
	// Addr is the address the source answered, also when Err rejects it
	// (a private router address is how double NAT is seen).
	Addr netip.Addr
	// Err is nil for a valid, counted answer; otherwise why it doesn't count.
	Err error
	// Late marks a lookup cut off when Detect stopped waiting (see
	// Config.Settle); Err then says how it ended.
	Late bool
	// Took is how long the lookup took.
	Took time.Duration
}

// String formats the answer for a log line: "source=addr" or "source=error: ...".
func (a Answer) String() string {
	switch {
	case a.Late:
		return fmt.Sprintf("%s=cut off: %s", a.Source, a.Err)
	case a.Err != nil && a.Addr.IsValid():
		return fmt.Sprintf("%s=%s (rejected: %s)", a.Source, a.Addr, a.Err)
	case a.Err != nil:
		return fmt.Sprintf("%s=error: %s", a.Source, a.Err)
	}
	return fmt.Sprintf("%s=%s", a.Source, a.Addr)
}

// Result is the outcome of one Detect.
type Result struct {
	// V4 and V6 are the addresses to publish; zero when there is none.
	V4, V6 netip.Addr
	// V4Err and V6Err say why a family has no address: they wrap
	// ErrNoConsensus or ErrNoValidAnswer. Nil when the address is set or the
	// family is not detected (IPv6 off).
	V4Err, V6Err error
	// Answers holds every source's answer, IPv4 first, in source order.
	Answers []Answer
	// Ambiguous: some family got valid but conflicting answers and no consensus.
	Ambiguous bool
	// NAT classifies the router (see Config.Router); RouterExternal is its
	// reported external IPv4 address, zero if unknown.
	NAT            NATKind
	RouterExternal netip.Addr
	// At is when the detection started.
	At time.Time
}

// Detector finds the public addresses by consensus of its sources.
type Detector struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex // guards the fields below
	// lastNAT and lastState are what was last logged, so a steady state
	// is logged once, not on every check.
	lastNAT   NATKind
	lastState map[Family]string
}

// New returns a Detector; see Config for defaults.
func New(cfg Config) *Detector {
	if cfg.MinAgree <= 0 {
		cfg.MinAgree = 2
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Settle == 0 {
		cfg.Settle = 300 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LocalAddrs == nil {
		cfg.LocalAddrs = LocalAddrs
	}
	d := &Detector{cfg: cfg, log: logger(cfg.Logger), lastState: map[Family]string{}}
	if len(cfg.Sources) < cfg.MinAgree {
		d.log.Warn("publicip: fewer sources than min_agree; no address can ever be published",
			"sources", len(cfg.Sources), "min_agree", cfg.MinAgree)
	}
	return d
}

// families returns the families Detect works on.
func (d *Detector) families() []Family {
	if d.cfg.IPv6 {
		return []Family{IPv4, IPv6}
	}
	return []Family{IPv4}
}

// tally counts the operators behind valid answers of one family, by vote key.
type tally struct {
	votes   map[netip.Prefix]map[string]bool
	pending int
	decided bool
	settle  *time.Timer // running once a provisional winner appeared
}

// leader returns the key with the most votes (the lowest address among
// equals), its count, and the runner-up's count.
func (t *tally) leader() (netip.Prefix, int, int) {
	type kv struct {
		k netip.Prefix
		n int
	}
	s := make([]kv, 0, len(t.votes))
	for k, ops := range t.votes {
		s = append(s, kv{k, len(ops)})
	}
	if len(s) == 0 {
		return netip.Prefix{}, 0, 0
	}
	slices.SortFunc(s, func(a, b kv) int {
		if c := cmp.Compare(b.n, a.n); c != 0 {
			return c
		}
		return a.k.Addr().Compare(b.k.Addr())
	})
	if len(s) == 1 {
		return s[0].k, s[0].n, 0
	}
	return s[0].k, s[0].n, s[1].n
}

// vote counts a's operator for a's address.
func (t *tally) vote(a Answer) {
	k := voteKey(a.Addr)
	if t.votes[k] == nil {
		t.votes[k] = map[string]bool{}
	}
	t.votes[k][a.Operator] = true
}

// voteKey is what sources vote on: the IPv4 address, or the IPv6 /64. Hosts
// use several IPv6 addresses (temporary ones rotate), the prefix is stable.
func voteKey(a netip.Addr) netip.Prefix {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p
	}
	return netip.PrefixFrom(a, 32)
}

// Detect asks every source for every family in parallel and returns the
// consensus. The error is non-nil only when no family got an address (or ctx
// ended); per-family reasons are in Result.V4Err and V6Err.
func (d *Detector) Detect(ctx context.Context) (Result, error) {
	start := d.cfg.Now()
	res := Result{At: start}
	fams := d.families()

	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type item struct {
		i int // index into answers
		a Answer
	}
	answers := make([]Answer, 0, len(fams)*len(d.cfg.Sources))
	ch := make(chan item, len(fams)*len(d.cfg.Sources))
	var wg sync.WaitGroup
	for _, fam := range fams {
		for _, src := range d.cfg.Sources {
			i := len(answers)
			op := OperatorOf(src)
			answers = append(answers, Answer{Source: src.Name(), Operator: op, Family: fam})
			wg.Go(func() {
				sctx, scancel := context.WithTimeout(lctx, d.cfg.Timeout)
				defer scancel()
				t0 := d.cfg.Now()
				a, err := src.Lookup(sctx, fam)
				ans := d.check(src.Name(), fam, a, err, d.cfg.Now().Sub(t0))
				ans.Operator = op
				ch <- item{i, ans}
			})
		}
	}

	tallies := map[Family]*tally{}
	for _, fam := range fams {
		tallies[fam] = &tally{votes: map[netip.Prefix]map[string]bool{}, pending: len(d.cfg.Sources)}
	}
	settleC := func(f Family) <-chan time.Time {
		if t := tallies[f]; t != nil && t.settle != nil {
			return t.settle.C
		}
		return nil
	}
	undecided := len(fams)
	for _, t := range tallies {
		if t.pending == 0 {
			t.decided = true
			undecided--
		}
	}
	for undecided > 0 {
		var fired Family
		select {
		case it := <-ch:
			answers[it.i] = it.a
			t := tallies[it.a.Family]
			t.pending--
			if it.a.Err == nil {
				t.vote(it.a)
			}
		case <-settleC(IPv4):
			fired = IPv4
		case <-settleC(IPv6):
			fired = IPv6
		case <-ctx.Done():
			wg.Wait()
			return res, fmt.Errorf("detect public address: %w", ctx.Err())
		}
		for fam, t := range tallies {
			if t.decided {
				continue
			}
			_, n1, n2 := t.leader()
			provisional := n1 >= d.cfg.MinAgree && n1 > n2
			switch {
			case t.pending == 0,
				provisional && n1 > n2+t.pending, // no answer left can change it
				n1+t.pending < d.cfg.MinAgree:    // nothing left can reach it
				t.decided = true
			case fam == fired && provisional:
				t.decided = true
			case fam == fired:
				t.settle = nil // wait for more; re-armed on the next provisional winner
			case provisional && t.settle == nil && d.cfg.Settle > 0:
				t.settle = time.NewTimer(d.cfg.Settle)
			}
			if t.decided {
				undecided--
				if t.settle != nil {
					t.settle.Stop()
				}
			}
		}
	}
	cancel()
	wg.Wait()
	close(ch)
	// Lookups that finished anyway count; the others are marked cut off.
	for it := range ch {
		answers[it.i] = it.a
		answers[it.i].Late = errors.Is(it.a.Err, context.Canceled)
	}
	res.Answers = answers

	for _, fam := range fams {
		addr, err, ambiguous := d.decide(fam, answers)
		res.Ambiguous = res.Ambiguous || ambiguous
		if fam == IPv4 {
			res.V4, res.V4Err = addr, err
		} else {
			res.V6, res.V6Err = addr, err
		}
	}
	if d.cfg.Router != "" {
		res.NAT, res.RouterExternal = d.classify(answers, res.V4)
	}
	if !res.V4.IsValid() && !res.V6.IsValid() {
		return res, fmt.Errorf("detect public address: %w", errors.Join(res.V4Err, res.V6Err))
	}
	return res, nil
}

// check validates one raw answer and logs a bad one.
func (d *Detector) check(src string, fam Family, a netip.Addr, err error, took time.Duration) Answer {
	ans := Answer{Source: src, Family: fam, Addr: a, Err: err, Took: took}
	if err == nil && !fam.Matches(a) {
		ans.Err = fmt.Errorf("%s answered for %s: %w", a, fam, ErrWrongFamily)
	}
	if ans.Err == nil {
		ans.Err = Valid(a, d.cfg.Accept)
	}
	switch {
	case ans.Err == nil, errors.Is(ans.Err, ErrNoAnswer):
	case src == d.cfg.Router && errors.Is(ans.Err, ErrNotGlobal):
		// A private or CGNAT router address is the NAT signal, not a fault.
	case errors.Is(ans.Err, ErrBadAnswer), errors.Is(ans.Err, ErrNotGlobal), errors.Is(ans.Err, ErrWrongFamily):
		d.log.Warn("publicip: source answer rejected, not counted", "source", src, "family", fam.String(), "err", ans.Err)
	default:
		d.log.Debug("publicip: source failed", "source", src, "family", fam.String(), "err", ans.Err, "took", took)
	}
	return ans
}

// decide computes one family's consensus from the counted answers.
func (d *Detector) decide(fam Family, answers []Answer) (addr netip.Addr, err error, ambiguous bool) {
	var mine []Answer
	t := tally{votes: map[netip.Prefix]map[string]bool{}}
	for _, a := range answers {
		if a.Family != fam {
			continue
		}
		mine = append(mine, a)
		if a.Err == nil {
			t.vote(a)
		}
	}
	votes := t.votes
	key, n1, n2 := t.leader()
	summary := summarize(mine)
	switch {
	case n1 == 0:
		err = fmt.Errorf("%s: %w: %s", fam, ErrNoValidAnswer, summary)
		d.logState(fam, "none", slog.LevelInfo, "publicip: no valid answer from any source; nothing published",
			"family", fam.String(), "answers", summary)
		return netip.Addr{}, err, false
	case n1 < d.cfg.MinAgree || n1 == n2:
		ambiguous = len(votes) > 1
		err = fmt.Errorf("%s: %w (need %d agreeing): %s", fam, ErrNoConsensus, d.cfg.MinAgree, summary)
		d.logState(fam, "noconsensus:"+summary, slog.LevelWarn, "publicip: no consensus; nothing published",
			"family", fam.String(), "min_agree", d.cfg.MinAgree, "answers", summary)
		return netip.Addr{}, err, ambiguous
	}
	if len(votes) > 1 {
		d.log.Warn("publicip: some sources disagree with the consensus",
			"family", fam.String(), "consensus", key.String(), "votes", n1, "answers", summary)
	}
	addr = key.Addr()
	if fam == IPv6 {
		addr, err = d.pickIPv6(key, mine)
		if err != nil {
			return netip.Addr{}, err, false
		}
	}
	d.logState(fam, "ok:"+addr.String(), slog.LevelInfo, "publicip: public address detected",
		"family", fam.String(), "addr", addr.String(), "votes", n1, "answers", summary)
	return addr, nil, false
}

// pickIPv6 chooses the address to publish within the agreed /64: prefix +
// configured interface ID; else this host's stable address there; else the
// address most sources saw.
func (d *Detector) pickIPv6(p netip.Prefix, answers []Answer) (netip.Addr, error) {
	if d.cfg.IPv6InterfaceID.IsValid() {
		a := WithInterfaceID(p.Addr(), d.cfg.IPv6InterfaceID)
		if err := Valid(a, d.cfg.Accept); err != nil {
			return netip.Addr{}, fmt.Errorf("ipv6 with interface id: %w", err)
		}
		return a, nil
	}
	local, err := d.cfg.LocalAddrs()
	if err != nil {
		d.log.Debug("publicip: listing local addresses failed", "err", err)
	}
	if a, ok := PickIPv6(local, p, d.cfg.Accept); ok {
		return a, nil
	}
	seen := map[netip.Addr]int{}
	var order []netip.Addr
	for _, a := range answers {
		if a.Err == nil && p.Contains(a.Addr) {
			if seen[a.Addr] == 0 {
				order = append(order, a.Addr)
			}
			seen[a.Addr]++
		}
	}
	// Stable sort keeps source order among equal counts.
	slices.SortStableFunc(order, func(x, y netip.Addr) int { return cmp.Compare(seen[y], seen[x]) })
	return order[0], nil
}

// logState logs msg at level when fam's state differs from the last one
// logged, at debug level otherwise, so a steady state isn't repeated each check.
func (d *Detector) logState(fam Family, state string, level slog.Level, msg string, args ...any) {
	d.mu.Lock()
	changed := d.lastState[fam] != state
	d.lastState[fam] = state
	d.mu.Unlock()
	if !changed {
		level = slog.LevelDebug
	}
	d.log.Log(context.Background(), level, msg, args...)
}

// classify finds the router's answer and classifies the NAT, logging one
// clear line when the classification changes. The router's answer counts even
// when it came after the decision; when the decision cut it off, the previous
// classification stands.
func (d *Detector) classify(answers []Answer, public netip.Addr) (NATKind, netip.Addr) {
	var router netip.Addr
	cutOff := false
	for _, a := range answers {
		if a.Source == d.cfg.Router && a.Family == IPv4 {
			router, cutOff = a.Addr, a.Late
		}
	}
	k := ClassifyNAT(router, public, d.cfg.Accept)
	d.mu.Lock()
	if cutOff {
		k = d.lastNAT
	}
	changed := d.lastNAT != k
	d.lastNAT = k
	d.mu.Unlock()
	if changed {
		d.logNAT(k, router, public)
	}
	return k, router
}

// logNAT logs one clear line saying what the NAT kind means.
func (d *Detector) logNAT(k NATKind, router, public netip.Addr) {
	level := slog.LevelInfo
	if k.RelayOnly() {
		level = slog.LevelWarn
	}
	d.log.Log(context.Background(), level, "publicip: "+k.Explain(),
		"nat", k.String(), "router_external", addrString(router), "public", addrString(public))
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	return a.String()
}

// summarize lists every answer: "relay=203.0.113.7 https://x=error: ...".
func summarize(as []Answer) string {
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = a.String()
	}
	return strings.Join(parts, "; ")
}
