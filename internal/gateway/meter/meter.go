// Package meter counts the bytes each viewer moves, per service and per login
// session, and enforces an optional daily cap per viewer. The http and rtsp
// handlers of the gateway feed it; the agent shows it in status and metrics,
// and the phone page shows a session's figure.
//
// A day is a calendar day of Config.Location (the agent's local time by
// default): a viewer's daily figure starts again at local midnight. The
// daily figures are saved in Config.StateDir (UsageFile) at Save, so a restart
// does not reset a cap. Totals since start and session figures live in memory.
//
// A nil *Meter is valid and counts nothing.
package meter

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// UsageFile holds the daily figures in the state directory.
const UsageFile = "usage.json"

// maxSessions bounds the session figures kept; the least recently used
// goes first.
const maxSessions = 4096

// Config configures a Meter.
type Config struct {
	// StateDir keeps UsageFile. Empty = daily figures are not saved.
	StateDir string
	// Caps are the viewers' daily caps in bytes (both directions together);
	// a viewer absent or at 0 has none.
	Caps map[string]int64
	// Location sets where a day ends. Nil = time.Local.
	Location *time.Location
	// Now tells the time. Nil = time.Now.
	Now func() time.Time
	// Audit receives "cap_reached" (viewer, cap, used, resets) once per
	// viewer and day. Nil discards.
	Audit *slog.Logger
	// Logger receives a warning when UsageFile cannot be read. Nil discards.
	Logger *slog.Logger
}

// Meter counts bytes per viewer. Safe for concurrent use.
type Meter struct {
	cfg   Config
	audit *slog.Logger

	mu       sync.Mutex // guards the fields below
	day      string     // the calendar day the daily figures are for
	today    map[string]int64
	capped   map[string]bool // cap_reached logged today
	totals   map[key]*ServiceUsage
	sessions map[string]*session
	dirty    bool
}

type key struct{ viewer, service string }

type session struct {
	bytes int64
	last  time.Time
}

// ServiceUsage is what one viewer moved through one service since the
// agent started.
type ServiceUsage struct {
	Service  string `json:"service"`
	BytesOut int64  `json:"bytes_out"` // sent to the viewer
	BytesIn  int64  `json:"bytes_in"`  // received from the viewer
}

// ViewerUsage is one viewer's figures.
type ViewerUsage struct {
	Viewer   string `json:"viewer"`
	BytesOut int64  `json:"bytes_out"` // since start, every service
	BytesIn  int64  `json:"bytes_in"`
	// Today is both directions since local midnight (kept across restarts).
	Today int64 `json:"today"`
	// Cap is the daily cap, 0 = none.
	Cap int64 `json:"daily_cap,omitempty"`
	// ResetsAt is when Today starts again.
	ResetsAt time.Time      `json:"resets_at"`
	Services []ServiceUsage `json:"services,omitempty"`
}

// state is UsageFile.
type state struct {
	Version int              `json:"version"`
	Day     string           `json:"day"`
	Today   map[string]int64 `json:"today"`
}

// New returns a Meter with today's figures read from StateDir. A missing
// file is a fresh start; so is an unreadable or damaged one, with a warning
// naming it: the agent must start even so.
func New(cfg Config) (*Meter, error) {
	if cfg.Location == nil {
		cfg.Location = time.Local
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for v, c := range cfg.Caps {
		if c < 0 {
			return nil, fmt.Errorf("meter: viewer %s: negative daily cap %d", v, c)
		}
	}
	m := &Meter{cfg: cfg, audit: cmp.Or(cfg.Audit, slog.New(slog.DiscardHandler)), today: map[string]int64{},
		capped: map[string]bool{}, totals: map[key]*ServiceUsage{}, sessions: map[string]*session{}}
	m.day = m.dayOf(cfg.Now())
	if cfg.StateDir == "" {
		return m, nil
	}
	path := filepath.Join(cfg.StateDir, UsageFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	var st state
	if err == nil {
		if err = json.Unmarshal(b, &st); err == nil && st.Version != 1 {
			err = fmt.Errorf("version %d, want 1", st.Version)
		}
	}
	if err != nil {
		if cfg.Logger != nil {
			cfg.Logger.Warn("the viewers' daily data figures cannot be read: today's figures (and caps) start afresh; the file is rewritten at the next save",
				"file", path, "err", err)
		}
		return m, nil
	}
	if st.Day == m.day {
		for v, n := range st.Today {
			if n > 0 {
				m.today[v] = n
				if c := cfg.Caps[v]; c > 0 && n >= c {
					m.capped[v] = true
				}
			}
		}
	}
	return m, nil
}

func (m *Meter) dayOf(t time.Time) string { return t.In(m.cfg.Location).Format(time.DateOnly) }

// resetsAt is the next local midnight after t.
func (m *Meter) resetsAt(t time.Time) time.Time {
	t = t.In(m.cfg.Location)
	y, mo, d := t.Date()
	return time.Date(y, mo, d+1, 0, 0, 0, 0, m.cfg.Location)
}

// rollLocked starts a new day's figures when the day changed.
func (m *Meter) rollLocked(now time.Time) {
	if d := m.dayOf(now); d != m.day {
		m.day = d
		clear(m.today)
		clear(m.capped)
		m.dirty = true
	}
}

// Add counts bytes of viewer on service: in received from the viewer, out
// sent to them. session is the login session ("" = none: Basic, links, RTSP).
func (m *Meter) Add(viewer, service, sessionID string, in, out int64) {
	if m == nil || viewer == "" || in <= 0 && out <= 0 {
		return
	}
	in, out = max(in, 0), max(out, 0)
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rollLocked(now)
	k := key{viewer, service}
	u := m.totals[k]
	if u == nil {
		u = &ServiceUsage{Service: service}
		m.totals[k] = u
	}
	u.BytesIn += in
	u.BytesOut += out
	m.today[viewer] += in + out
	m.dirty = true
	if c := m.cfg.Caps[viewer]; c > 0 && m.today[viewer] >= c && !m.capped[viewer] {
		m.capped[viewer] = true
		m.audit.Info("cap_reached", "viewer", viewer, "service", service, "cap", c, "used", m.today[viewer],
			"resets", m.resetsAt(now).Format(time.RFC3339))
	}
	if sessionID != "" {
		s := m.sessions[sessionID]
		if s == nil {
			if len(m.sessions) >= maxSessions {
				m.evictLocked()
			}
			s = &session{}
			m.sessions[sessionID] = s
		}
		s.bytes += in + out
		s.last = now
	}
}

// evictLocked forgets the least recently used session.
func (m *Meter) evictLocked() {
	var oldest string
	var t time.Time
	for id, s := range m.sessions {
		if oldest == "" || s.last.Before(t) {
			oldest, t = id, s.last
		}
	}
	delete(m.sessions, oldest)
}

// Over reports whether viewer has used up today's cap, and when it resets.
func (m *Meter) Over(viewer string) (over bool, resets time.Time) {
	if m == nil {
		return false, time.Time{}
	}
	now := m.cfg.Now()
	c := m.cfg.Caps[viewer]
	if c <= 0 {
		return false, m.resetsAt(now)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rollLocked(now)
	return m.today[viewer] >= c, m.resetsAt(now)
}

// Session is the bytes moved under a login session (both directions).
func (m *Meter) Session(id string) int64 {
	if m == nil || id == "" {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.sessions[id]; s != nil {
		return s.bytes
	}
	return 0
}

// EndSession forgets a session's figure (at logout).
func (m *Meter) EndSession(id string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	delete(m.sessions, id)
	m.mu.Unlock()
}

// Viewer is one viewer's figures.
func (m *Meter) Viewer(name string) ViewerUsage {
	if m == nil {
		return ViewerUsage{Viewer: name}
	}
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rollLocked(now)
	return m.viewerLocked(name, now)
}

func (m *Meter) viewerLocked(name string, now time.Time) ViewerUsage {
	u := ViewerUsage{Viewer: name, Today: m.today[name], Cap: m.cfg.Caps[name], ResetsAt: m.resetsAt(now)}
	for k, s := range m.totals {
		if k.viewer == name {
			u.Services = append(u.Services, *s)
			u.BytesOut += s.BytesOut
			u.BytesIn += s.BytesIn
		}
	}
	slices.SortFunc(u.Services, func(a, b ServiceUsage) int { return cmp.Compare(a.Service, b.Service) })
	return u
}

// Usage is every viewer's figures who moved bytes since start or today, or
// has a cap, sorted by name.
func (m *Meter) Usage() []ViewerUsage {
	if m == nil {
		return nil
	}
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rollLocked(now)
	names := map[string]bool{}
	for k := range m.totals {
		names[k.viewer] = true
	}
	for v := range m.today {
		names[v] = true
	}
	for v, c := range m.cfg.Caps {
		if c > 0 {
			names[v] = true
		}
	}
	out := make([]ViewerUsage, 0, len(names))
	for _, v := range slices.Sorted(maps.Keys(names)) {
		out = append(out, m.viewerLocked(v, now))
	}
	return out
}

// Save writes today's figures to StateDir (0600) when they changed.
func (m *Meter) Save() error {
	if m == nil || m.cfg.StateDir == "" {
		return nil
	}
	m.mu.Lock()
	if !m.dirty {
		m.mu.Unlock()
		return nil
	}
	st := state{Version: 1, Day: m.day, Today: maps.Clone(m.today)}
	m.dirty = false
	m.mu.Unlock()
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("meter: %w", err)
	}
	tmp := filepath.Join(m.cfg.StateDir, "."+UsageFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		m.markDirty()
		return fmt.Errorf("meter: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(m.cfg.StateDir, UsageFile)); err != nil {
		m.markDirty()
		return fmt.Errorf("meter: %w", err)
	}
	return nil
}

func (m *Meter) markDirty() {
	m.mu.Lock()
	m.dirty = true
	m.mu.Unlock()
}
