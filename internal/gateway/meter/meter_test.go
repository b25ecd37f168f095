package meter

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable time for the tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock(s string) *clock       { t, _ := time.Parse(time.RFC3339, s); return &clock{t: t} }
func utcMeter(t *testing.T, cfg Config) *Meter {
	t.Helper()
	cfg.Location = time.UTC
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestCountsPerViewerServiceAndSession(t *testing.T) {
	c := newClock("2026-12-02T10:00:00Z")
	m := utcMeter(t, Config{Now: c.now})
	m.Add("alice", "frontdoor", "s1", 100, 1000)
	m.Add("alice", "portal", "s1", 10, 500)
	m.Add("alice", "frontdoor", "", 0, 7)
	m.Add("bob", "frontdoor", "s2", 1, 2)
	m.Add("", "frontdoor", "", 5, 5) // before login: nobody's
	a := m.Viewer("alice")
	if a.BytesOut != 1507 || a.BytesIn != 110 || a.Today != 1617 {
		t.Errorf("alice %+v: want out 1507, in 110, today 1617", a)
	}
	if len(a.Services) != 2 || a.Services[0] != (ServiceUsage{"frontdoor", 1007, 100}) || a.Services[1] != (ServiceUsage{"portal", 500, 10}) {
		t.Errorf("alice's services %+v", a.Services)
	}
	if got := m.Session("s1"); got != 1610 {
		t.Errorf("session s1 %d, want 1610", got)
	}
	m.EndSession("s1")
	if got := m.Session("s1"); got != 0 {
		t.Errorf("session s1 after its end %d", got)
	}
	if u := m.Usage(); len(u) != 2 || u[0].Viewer != "alice" || u[1].Viewer != "bob" {
		t.Errorf("Usage %+v", u)
	}
	var nilMeter *Meter
	nilMeter.Add("alice", "x", "s", 1, 1)
	if over, _ := nilMeter.Over("alice"); over || nilMeter.Session("s") != 0 || nilMeter.Save() != nil {
		t.Error("a nil Meter counts")
	}
}

func TestCapResetsAtMidnightAndSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	c := newClock("2026-12-02T23:00:00Z")
	var audit bytes.Buffer
	cfg := Config{StateDir: dir, Caps: map[string]int64{"alice": 1000}, Now: c.now,
		Audit: slog.New(slog.NewJSONHandler(&audit, nil))}
	m := utcMeter(t, cfg)
	m.Add("alice", "cam", "", 0, 600)
	if over, _ := m.Over("alice"); over {
		t.Fatal("over the cap at 600 of 1000")
	}
	m.Add("alice", "cam", "", 0, 400)
	over, resets := m.Over("alice")
	if !over {
		t.Fatal("not over the cap at 1000 of 1000")
	}
	if want := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC); !resets.Equal(want) {
		t.Errorf("resets %v, want %v", resets, want)
	}
	m.Add("alice", "cam", "", 0, 1)
	if n := strings.Count(audit.String(), `"msg":"cap_reached"`); n != 1 {
		t.Errorf("%d cap_reached events, want 1:\n%s", n, audit.String())
	}
	if over, _ := m.Over("bob"); over {
		t.Error("bob has no cap but is over it")
	}
	if err := m.Save(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, UsageFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("usage file: %v %v", fi, err)
	}

	// A restart the same day keeps the figure.
	m2 := utcMeter(t, cfg)
	if over, _ := m2.Over("alice"); !over {
		t.Error("a restart reset the cap")
	}
	if got := m2.Viewer("alice").Today; got != 1001 {
		t.Errorf("today after restart %d, want 1001", got)
	}
	// Midnight starts again, in memory and for the next restart.
	c.add(time.Hour)
	if over, _ := m2.Over("alice"); over {
		t.Error("still over the cap after midnight")
	}
	if got := m2.Viewer("alice").Today; got != 0 {
		t.Errorf("today after midnight %d", got)
	}
	if err := m2.Save(); err != nil {
		t.Fatal(err)
	}
	var st state
	b, _ := os.ReadFile(filepath.Join(dir, UsageFile))
	if err := json.Unmarshal(b, &st); err != nil || st.Day != "2026-12-03" || st.Today["alice"] != 0 {
		t.Errorf("saved %s (%v)", b, err)
	}
	// A usage file of an earlier day starts the figures afresh.
	c.add(48 * time.Hour)
	if got := utcMeter(t, cfg).Viewer("alice").Today; got != 0 {
		t.Errorf("an old day's figure came back: %d", got)
	}
}

func TestBrokenUsageFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, UsageFile), []byte("{nope"), 0o600)
	var log bytes.Buffer
	m, err := New(Config{StateDir: dir, Caps: map[string]int64{"alice": 10}, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatalf("a damaged usage file stopped the start: %v", err)
	}
	if !strings.Contains(log.String(), UsageFile) || !strings.Contains(log.String(), "start afresh") {
		t.Errorf("warning %q, want one naming the file and what happens", log.String())
	}
	m.Add("alice", "cam", "", 0, 5)
	if err := m.Save(); err != nil {
		t.Fatal(err)
	}
	if m2, _ := New(Config{StateDir: dir}); m2.Viewer("alice").Today != 5 {
		t.Error("the damaged file was not replaced at the next save")
	}
	if _, err := New(Config{Caps: map[string]int64{"x": -1}}); err == nil {
		t.Error("a negative cap was taken")
	}
}

func TestSessionsBounded(t *testing.T) {
	c := newClock("2026-12-02T10:00:00Z")
	m := utcMeter(t, Config{Now: c.now})
	for i := range maxSessions + 10 {
		c.add(time.Millisecond)
		m.Add("alice", "p", "s"+string(rune('a'+i%26))+time.Duration(i).String(), 1, 1)
	}
	if n := len(m.sessions); n != maxSessions {
		t.Errorf("%d sessions kept, want %d", n, maxSessions)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"500MB": 500e6, "1.5 GB": 15e8, "750MiB": 750 << 20, "1048576": 1 << 20, "2gb": 2e9, "10 kB": 1e4} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "5 parsecs", "0", "-1MB", "1e30GB", "NaN", "1.2.3MB"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}
