package access

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLinks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, clk, audit := newStore(t, func(c *Config) { c.StateDir = dir })
	if _, ok := s.Link(TokenPrefix + "nothing-yet"); ok {
		t.Fatal("a made-up token works")
	}
	tok, l, err := CreateLink(dir, "alice", "kitchen tablet")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, TokenPrefix) || len(tok) != len(TokenPrefix)+43 || l.Viewer != "alice" || l.Note != "kitchen tablet" || l.ID == "" {
		t.Errorf("token %q, link %+v", tok, l)
	}
	tok2, l2, err := CreateLink(dir, "bob", "")
	if err != nil || tok2 == tok || l2.ID == l.ID {
		t.Fatalf("second link: %v, %q %+v", err, tok2, l2)
	}
	path := filepath.Join(dir, LinksFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("links file: %v, mode %v", err, fi.Mode())
	}
	if b, _ := os.ReadFile(path); strings.Contains(string(b), tok) || strings.Contains(string(b), tok[len(TokenPrefix):]) {
		t.Error("the links file holds a token")
	}
	list, err := ListLinks(dir)
	if err != nil || len(list) != 2 || list[0] != l || list[1] != l2 {
		t.Errorf("ListLinks = %+v, %v", list, err)
	}

	// The running Store sees the new links within a second.
	clk.Add(linkCheckEvery)
	if v, ok := s.Link(tok); !ok || v != "alice" {
		t.Errorf("Link = %q, %v", v, ok)
	}
	if v, ok := s.Link(tok2); !ok || v != "bob" {
		t.Errorf("Link(bob's) = %q, %v", v, ok)
	}
	if _, ok := s.Link(tok + "x"); ok {
		t.Error("a changed token works")
	}
	if err := RevokeLink(dir, l.ID); err != nil {
		t.Fatal(err)
	}
	clk.Add(linkCheckEvery)
	if _, ok := s.Link(tok); ok {
		t.Error("a revoked token still works in the running Store")
	}
	if _, ok := s.Link(tok2); !ok {
		t.Error("revoking one link revoked another")
	}
	if err := RevokeLink(dir, l.ID); !errors.Is(err, ErrUnknownLink) {
		t.Errorf("revoking twice: %v", err)
	}
	if list, _ := ListLinks(dir); len(list) != 1 || list[0] != l2 {
		t.Errorf("after revoking: %+v", list)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode after rewrite %v", fi.Mode())
	}
	a := audit.String()
	if !strings.Contains(a, "msg=link_used link="+l.ID+" viewer=alice") || !strings.Contains(a, "msg=link_refused") || strings.Contains(a, tok) {
		t.Errorf("audit:\n%s", a)
	}

	// A new Store without bob refuses bob's link; a damaged file refuses all.
	s2, clk2, _ := newStore(t, func(c *Config) { c.StateDir = dir; delete(c.Viewers, "bob") })
	if _, ok := s2.Link(tok2); ok {
		t.Error("a link of a viewer no longer configured works")
	}
	tok3, _, _ := CreateLink(dir, "alice", "")
	clk2.Add(linkCheckEvery)
	if _, ok := s2.Link(tok3); !ok {
		t.Fatal("new link refused")
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	clk2.Add(linkCheckEvery)
	if _, ok := s2.Link(tok3); ok {
		t.Error("a damaged links file kept the old links")
	}
	if _, err := New(Config{StateDir: dir}); err == nil {
		t.Error("New accepted a damaged links file")
	}
	if _, _, err := CreateLink(dir, "alice", ""); err == nil {
		t.Error("CreateLink overwrote a damaged links file")
	}
}

func TestLinksCheckedAtMostEverySecond(t *testing.T) {
	dir := t.TempDir()
	s, clk, _ := newStore(t, func(c *Config) { c.StateDir = dir })
	s.Link(TokenPrefix + "x")
	tok, _, _ := CreateLink(dir, "alice", "")
	clk.Add(linkCheckEvery - time.Millisecond)
	if _, ok := s.Link(tok); ok {
		t.Error("the file was looked at again within a second")
	}
	clk.Add(time.Millisecond)
	if _, ok := s.Link(tok); !ok {
		t.Error("not reloaded after a second")
	}
}

// Refusals, which cost a stranger nothing, are audited at most once a second.
func TestLinkRefusalsAuditedOncePerSecond(t *testing.T) {
	s, clk, audit := newStore(t, func(c *Config) { c.StateDir = t.TempDir() })
	for range 100 {
		s.Link(TokenPrefix + "guess")
		s.Link("garbage")
	}
	if n := strings.Count(audit.String(), "link_refused"); n != 1 {
		t.Errorf("%d link_refused records, want 1", n)
	}
	clk.Add(time.Second)
	s.Link("garbage")
	if a := audit.String(); strings.Count(a, "link_refused") != 2 || !strings.Contains(a, "not_logged_before=199") {
		t.Errorf("audit:\n%s", a)
	}
}

func TestLinksWithoutStateDir(t *testing.T) {
	s, _, _ := newStore(t, nil)
	if _, ok := s.Link(TokenPrefix + "abc"); ok {
		t.Error("a token works without links")
	}
	if _, _, err := CreateLink("", "alice", ""); err == nil {
		t.Error("CreateLink without a state dir")
	}
	if _, _, err := CreateLink(t.TempDir(), "bad\nname", ""); err == nil {
		t.Error("CreateLink accepted a control character in the name")
	}
}

// A revoke that leaves the file's size, mtime and inode as they were (a
// rewrite within the timestamp granularity) is still noticed.
func TestLinksRewriteKeepingStat(t *testing.T) {
	dir := t.TempDir()
	tok, _, err := CreateLink(dir, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	hash := mustHash(t, alicePW)
	clk := newClock()
	path := filepath.Join(dir, LinksFile)
	now := time.Now()
	os.Chtimes(path, now, now) // young when the Store reads it, however slow the machine
	s, err := New(Config{Viewers: map[string]string{"alice": hash}, StateDir: dir, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Link(tok); !ok {
		t.Fatal("refused")
	}
	fi, _ := os.Stat(path)
	b, _ := os.ReadFile(path)
	var other [64]byte
	for i := range other {
		other[i] = 'a'
	}
	i := strings.Index(string(b), `"sha256": "`) + len(`"sha256": "`)
	b = append(append(b[:i:i], other[:]...), b[i+64:]...)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if fi2, _ := os.Stat(path); !os.SameFile(fi, fi2) || fi2.Size() != fi.Size() || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Fatal("the test did not keep the file's stat")
	}
	clk.Add(linkCheckEvery)
	if _, ok := s.Link(tok); ok {
		t.Error("a token removed from the file still works")
	}
}
