package ddns

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := State{Version: stateVersion, Hostname: "home.example.com", Provider: "cloudflare",
		Published: Records{V4: v4a, NoV6: true}, UpdatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if err := writeState(dir, s); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, StateFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, %v", fi.Mode(), err)
	}
	got, ok, err := readState(dir)
	if err != nil || !ok || got != s {
		t.Fatalf("read back %+v %v %v, want %+v", got, ok, err, s)
	}
	// No temp files left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("dir has %d entries", len(ents))
	}
	// Missing file is not an error.
	if _, ok, err := readState(t.TempDir()); ok || err != nil {
		t.Fatalf("missing: %v %v", ok, err)
	}
}

func TestLoadStateRejects(t *testing.T) {
	for _, in := range []string{
		``,
		`{}`,
		`{"version":2,"hostname":"h.example.com","provider":"x","published":{}}`,
		`{"version":1,"hostname":"H.example.com","provider":"x","published":{}}`,
		`{"version":1,"hostname":"h.example.com","provider":"","published":{}}`,
		`{"version":1,"hostname":"h.example.com","provider":"x","published":{"a":"2001:db8::1"}}`,
		`{"version":1,"hostname":"h.example.com","provider":"x","published":{"a":"0.0.0.0"}}`,
		`{"version":1,"hostname":"h.example.com","provider":"x","published":{"a":"203.0.113.1","no_a":true}}`,
		`{"version":1,"hostname":"h.example.com","provider":"x","published":{"aaaa":"::ffff:1.2.3.4"}}`,
		`{"version":1,"hostname":"h.example.com","provider":"x","published":{},"extra":1}`,
		`{"version":1,"hostname":"h.example.com","provider":"x","published":{}} {}`,
		`{"version":1,"hostname":"bad host","provider":"x","published":{}}`,
	} {
		if _, err := LoadState([]byte(in)); !errors.Is(err, ErrBadState) {
			t.Errorf("%s: %v, want ErrBadState", in, err)
		}
	}
	if _, err := LoadState([]byte(`{"version":1,"hostname":"h.example.com","provider":"x","published":{"a":"203.0.113.1"}}`)); err != nil {
		t.Errorf("valid state rejected: %v", err)
	}
}

func FuzzLoadState(f *testing.F) {
	f.Add([]byte(`{"version":1,"hostname":"home.example.com","provider":"cloudflare","published":{"a":"203.0.113.5","no_aaaa":true},"updated_at":"2026-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"version":1,"hostname":"h.example.com","provider":"x","published":{"aaaa":"2001:db8::1"}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := LoadState(data)
		if err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("error not ErrBadState: %v", err)
			}
			return
		}
		// What loads is valid and survives a round trip.
		if err := s.Published.Validate(); err != nil {
			t.Fatalf("loaded invalid records: %v", err)
		}
		b, err := s.marshal()
		if err != nil {
			t.Fatal(err)
		}
		s2, err := LoadState(b)
		if err != nil {
			t.Fatalf("round trip: %v\n%s", err, b)
		}
		if s2.Hostname != s.Hostname || s2.Published != s.Published || !s2.UpdatedAt.Equal(s.UpdatedAt) {
			t.Fatalf("round trip changed state: %+v vs %+v", s, s2)
		}
	})
}
