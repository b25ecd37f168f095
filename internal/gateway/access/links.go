package access

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// LinksFile is the name of the links file in the state directory.
const LinksFile = "links.json"

// TokenPrefix starts every link token, so a token is recognisable in a URL
// or a leaked paste (and secret scanners can match it).
const TokenPrefix = "phl_"

// ErrUnknownLink is wrapped by RevokeLink for an ID that is not in the file.
var ErrUnknownLink = errors.New("no such link")

// Link describes a URL token; the token itself is shown once, by CreateLink.
type Link struct {
	ID      string    `json:"id"`
	Viewer  string    `json:"viewer"`
	Note    string    `json:"note,omitempty"`
	Created time.Time `json:"created"`
}

type linkRecord struct {
	Link
	SHA256 string `json:"sha256"` // of the token
}

type linkFile struct {
	Links []linkRecord `json:"links"`
}

// CreateLink makes a new token for viewer and records its hash in
// stateDir/links.json; the token is returned only here.
func CreateLink(stateDir, viewer, note string) (token string, l Link, err error) {
	if stateDir == "" {
		return "", Link{}, errors.New("create link: no state directory")
	}
	if viewer == "" || strings.ContainsFunc(viewer, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", Link{}, fmt.Errorf("create link: bad viewer name %q", viewer)
	}
	lf, err := readLinks(stateDir)
	if err != nil {
		return "", Link{}, err
	}
	b := make([]byte, 32)
	rand.Read(b)
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	id := make([]byte, 6)
	rand.Read(id)
	l = Link{ID: hex.EncodeToString(id), Viewer: viewer, Note: note, Created: time.Now().UTC().Truncate(time.Second)}
	sum := sha256.Sum256([]byte(token))
	lf.Links = append(lf.Links, linkRecord{Link: l, SHA256: hex.EncodeToString(sum[:])})
	if err := writeLinks(stateDir, lf); err != nil {
		return "", Link{}, err
	}
	return token, l, nil
}

// ListLinks returns the links in stateDir, oldest first.
func ListLinks(stateDir string) ([]Link, error) {
	lf, err := readLinks(stateDir)
	if err != nil {
		return nil, err
	}
	out := make([]Link, len(lf.Links))
	for i, r := range lf.Links {
		out[i] = r.Link
	}
	return out, nil
}

// RevokeLink removes the link with id; a running Store refuses its token
// within a second.
func RevokeLink(stateDir, id string) error {
	lf, err := readLinks(stateDir)
	if err != nil {
		return err
	}
	kept := lf.Links[:0]
	for _, r := range lf.Links {
		if r.ID != id {
			kept = append(kept, r)
		}
	}
	if len(kept) == len(lf.Links) {
		return fmt.Errorf("revoke link %q: %w in %s", id, ErrUnknownLink, filepath.Join(stateDir, LinksFile))
	}
	lf.Links = kept
	return writeLinks(stateDir, lf)
}

// readLinks reads the links file; a missing file holds no links.
func readLinks(dir string) (linkFile, error) {
	var lf linkFile
	if dir == "" {
		return lf, nil
	}
	path := filepath.Join(dir, LinksFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return lf, nil
	}
	if err != nil {
		return lf, fmt.Errorf("links: %w", err)
	}
	if err := json.Unmarshal(b, &lf); err != nil {
		return lf, fmt.Errorf("links: %s: %w", path, err)
	}
	for _, r := range lf.Links {
		if h, err := hex.DecodeString(r.SHA256); err != nil || len(h) != sha256.Size || r.ID == "" || r.Viewer == "" {
			return lf, fmt.Errorf("links: %s: link %q is damaged", path, r.ID)
		}
	}
	return lf, nil
}

// writeLinks replaces the links file atomically (a reader sees the old file
// or the new one), readable by its owner only.
func writeLinks(dir string, lf linkFile) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("links: %w", err)
	}
	b, err := json.MarshalIndent(lf, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+LinksFile+".*")
	if err != nil {
		return fmt.Errorf("links: %w", err)
	}
	defer os.Remove(f.Name()) // after the rename: no-op
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("links: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("links: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("links: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("links: %w", err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, LinksFile)); err != nil {
		return fmt.Errorf("links: %w", err)
	}
	return nil
}

const (
	// linkCheckEvery is how often a Store looks whether links.json changed.
	linkCheckEvery = time.Second
	racyFor        = 2 * time.Second
)

// linkCache is a Store's view of links.json.
type linkCache struct {
	dir string

	mu      sync.Mutex // guards the fields below
	checked time.Time
	fi      os.FileInfo // of the file loaded; nil: none
	racy    bool        // fi may not show the next change: read again

	refusedLogged time.Time // the last link_refused audited
	suppressed    int       // refusals not audited since
	byHash        map[[32]byte]Link
}

// load reads the file; the error is for New (a damaged file at start).
func (c *linkCache) load(now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.refreshLocked(now)
	return err
}

// refreshLocked reloads the file when it changed since the last look. On
// an error it keeps no links: a revoke must never be undone by a damaged file.
func (c *linkCache) refreshLocked(now time.Time) (changed bool, err error) {
	c.checked = now
	if c.dir == "" {
		return false, nil
	}
	path := filepath.Join(c.dir, LinksFile)
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		changed = c.fi != nil || c.byHash == nil
		c.fi, c.byHash = nil, map[[32]byte]Link{}
		return changed, nil
	}
	if err == nil && c.fi != nil && !c.racy && os.SameFile(fi, c.fi) && fi.ModTime().Equal(c.fi.ModTime()) && fi.Size() == c.fi.Size() {
		return false, nil
	}
	c.fi, c.byHash = nil, map[[32]byte]Link{}
	if err != nil {
		return true, fmt.Errorf("links: %w", err)
	}
	lf, err := readLinks(c.dir)
	if err != nil {
		return true, err
	}
	for _, r := range lf.Links {
		var h [32]byte
		hex.Decode(h[:], []byte(r.SHA256))
		c.byHash[h] = r.Link
	}
	c.fi = fi
	// A file rewritten within the file system's timestamp granularity can
	// keep its mtime, size and even inode number (reused after the rename):
	// while the file is that young, read it at every look (as git does with
	// its index).
	c.racy = time.Since(fi.ModTime()) < racyFor
	return true, nil
}

// Link returns the viewer of a URL token (embeds such as Home Assistant picture cards), if not revoked.
func (s *Store) Link(token string) (viewer string, ok bool) {
	now := s.now()
	if !strings.HasPrefix(token, TokenPrefix) || len(token) > 100 {
		s.refused(now, "not a link token")
		return "", false
	}
	sum := sha256.Sum256([]byte(token))
	c := &s.links
	c.mu.Lock()
	if now.Sub(c.checked) >= linkCheckEvery || now.Before(c.checked) {
		if changed, err := c.refreshLocked(now); err != nil {
			s.log.Warn("links file unreadable: refusing every link until it is fixed", "err", err)
		} else if changed {
			s.log.Info("links reloaded", "links", len(c.byHash))
		}
	}
	l, found := c.byHash[sum]
	c.mu.Unlock()
	switch {
	case !found:
		s.refused(now, "unknown or revoked")
		return "", false
	case s.viewers[l.Viewer].key == nil:
		s.audit.Info("link_refused", "reason", "viewer no longer configured", "link", l.ID, "viewer", l.Viewer)
		return "", false
	}
	s.audit.Info("link_used", "link", l.ID, "viewer", l.Viewer)
	return l.Viewer, true
}

// refused audits a refused token, at most once a second: refusals cost a
// stranger nothing, so they must not be able to fill the log at request rate.
func (s *Store) refused(now time.Time, reason string) {
	c := &s.links
	c.mu.Lock()
	if now.Sub(c.refusedLogged) < time.Second && !now.Before(c.refusedLogged) {
		c.suppressed++
		c.mu.Unlock()
		return
	}
	n := c.suppressed
	c.refusedLogged, c.suppressed = now, 0
	c.mu.Unlock()
	s.audit.Info("link_refused", "reason", reason, "not_logged_before", n)
}
