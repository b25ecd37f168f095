package invite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// File names in the state directory.
const (
	KeyFile   = "wireguard.key"        // the agent's private key, base64 as wg genkey writes it
	PeersFile = "wireguard-peers.json" // the phones
	lockFile  = ".wireguard-peers.lock"
)

// Limits on what the files may hold.
const (
	// MaxPeers bounds the peers file (and so the work of every reload).
	MaxPeers = 1000
	// maxFileSize bounds what Load reads: MaxPeers records are ~250 KiB.
	maxFileSize = 1 << 20
	// DefaultPollInterval is how often Watch looks at the peers file.
	DefaultPollInterval = time.Second
	// racyFor: a file younger than this is read at every look, since a
	// rewrite within the file system's timestamp granularity can keep its
	// mtime, size and (reused after the rename) inode.
	racyFor = 2 * time.Second
)

// Errors callers branch on.
var (
	ErrExists  = errors.New("already invited")
	ErrUnknown = errors.New("no such phone")
	ErrFull    = errors.New("no free tunnel address")
)

// Peer is one phone: what the agent needs to accept it.
type Peer struct {
	// Name names the phone (invite NAME).
	Name string
	// Viewer is whose phone it is: the viewer the gateway serves it as.
	Viewer string
	// PublicKey is the phone's WireGuard public key.
	PublicKey wgtypes.Key
	// Address is the phone's tunnel address (its AllowedIPs at the agent, /32 or /128).
	Address netip.Addr
	// Created is when the invite was made (UTC, whole seconds).
	Created time.Time
}

func (p Peer) equal(q Peer) bool {
	return p.Name == q.Name && p.Viewer == q.Viewer && p.PublicKey == q.PublicKey && p.Address == q.Address && p.Created.Equal(q.Created)
}

// peerRecord is a Peer as stored.
type peerRecord struct {
	Name      string    `json:"name"`
	Viewer    string    `json:"viewer"`
	PublicKey string    `json:"public_key"`
	Address   string    `json:"address"`
	Created   time.Time `json:"created"`
}

type peersFile struct {
	Version int          `json:"version"`
	Peers   []peerRecord `json:"peers"`
}

const fileVersion = 1

// Config says where the store lives and which tunnel subnet it allocates from.
type Config struct {
	// StateDir holds KeyFile and PeersFile. Required.
	StateDir string
	// Address is the agent's tunnel address with the subnet's prefix length
	// (wireguard.address, e.g. 10.77.0.1/24). Required for Add and Load.
	Address netip.Prefix
	// PollInterval is how often Watch looks at the peers file; zero =
	// DefaultPollInterval.
	PollInterval time.Duration
	// Logger gets Watch's reloads and problems; nil = discard.
	Logger *slog.Logger
	// Now is the clock for Created; nil = time.Now.
	Now func() time.Time
}

// Store is the agent's WireGuard key and peers in a state directory. Its
// methods are safe for several processes at once (the running agent and
// invite commands): writes take a file lock and replace the file atomically.
type Store struct {
	cfg Config
	log *slog.Logger
}

// New returns the store of cfg; it touches no file.
func New(cfg Config) (*Store, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("wireguard invites: no state directory")
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{cfg: cfg, log: log}, nil
}

func (s *Store) path(name string) string { return filepath.Join(s.cfg.StateDir, name) }

// PrivateKey returns the agent's WireGuard private key, generating and
// saving it (0600) on first use. A damaged key file is an error, never
// silently replaced: the phones' configs name its public key.
func (s *Store) PrivateKey() (wgtypes.Key, error) {
	var key wgtypes.Key
	err := s.locked(func() error {
		k, err := readKey(s.path(KeyFile))
		if err == nil {
			key = k
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if key, err = wgtypes.GeneratePrivateKey(); err != nil {
			return fmt.Errorf("wireguard key: %w", err)
		}
		return writeFile(s.cfg.StateDir, KeyFile, []byte(key.String()+"\n"))
	})
	return key, err
}

// PublicKey is the agent's public key (the phones' [Peer] PublicKey).
func (s *Store) PublicKey() (wgtypes.Key, error) {
	k, err := s.PrivateKey()
	if err != nil {
		return wgtypes.Key{}, err
	}
	return k.PublicKey(), nil
}

func readKey(path string) (wgtypes.Key, error) {
	b, err := readSmall(path)
	if err != nil {
		return wgtypes.Key{}, err
	}
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wireguard key: %s is damaged (want one base64 key as wg genkey prints): %w", path, err)
	}
	return k, nil
}

// Add invites a phone: a new key pair, the lowest free tunnel address of
// the subnet, and a record of the public key. The private key is returned
// only here; nobody stores it.
func (s *Store) Add(name, viewer string) (Peer, wgtypes.Key, error) {
	if err := checkName("phone", name); err != nil {
		return Peer{}, wgtypes.Key{}, err
	}
	if err := checkName("viewer", viewer); err != nil {
		return Peer{}, wgtypes.Key{}, err
	}
	if err := s.checkSubnet(); err != nil {
		return Peer{}, wgtypes.Key{}, err
	}
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return Peer{}, wgtypes.Key{}, fmt.Errorf("wireguard invite: %w", err)
	}
	var p Peer
	err = s.locked(func() error {
		peers, err := s.read()
		if err != nil {
			return err
		}
		if len(peers) >= MaxPeers {
			return fmt.Errorf("wireguard invite: %d phones already, the most one agent takes; revoke one first", MaxPeers)
		}
		for _, q := range peers {
			if q.Name == name {
				return fmt.Errorf("wireguard invite %q: %w (viewer %s, %s); revoke it first to make a new one", name, ErrExists, q.Viewer, q.Address)
			}
		}
		addr, err := s.freeAddress(peers)
		if err != nil {
			return err
		}
		p = Peer{Name: name, Viewer: viewer, PublicKey: priv.PublicKey(), Address: addr,
			Created: s.cfg.Now().UTC().Truncate(time.Second)}
		return s.write(append(peers, p))
	})
	if err != nil {
		return Peer{}, wgtypes.Key{}, err
	}
	return p, priv, nil
}

// freeAddress is the lowest address of the subnet that is not the agent's,
// a phone's, the subnet's own or (IPv4) its broadcast address.
func (s *Store) freeAddress(peers []Peer) (netip.Addr, error) {
	pfx := s.cfg.Address.Masked()
	used := map[netip.Addr]bool{s.cfg.Address.Addr(): true}
	for _, p := range peers {
		used[p.Address] = true
	}
	// At most len(used)+1 candidates need looking at.
	for a, n := pfx.Addr().Next(), 0; a.IsValid() && pfx.Contains(a) && n <= len(used); a, n = a.Next(), n+1 {
		if used[a] {
			continue
		}
		if a.Is4() && !pfx.Contains(a.Next()) { // broadcast
			break
		}
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("wireguard invite: %w in %s (wireguard.address): revoke a phone or use a larger subnet", ErrFull, pfx)
}

// List returns the phones, by name.
func (s *Store) List() ([]Peer, error) {
	var peers []Peer
	err := s.locked(func() error {
		var err error
		peers, err = s.read()
		return err
	})
	slices.SortFunc(peers, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	return peers, err
}

// Revoke removes the phone name; a running agent that Watches drops its key
// within the poll interval, and the phone gets no handshake from then on.
func (s *Store) Revoke(name string) (Peer, error) {
	var gone Peer
	err := s.locked(func() error {
		peers, err := s.read()
		if err != nil {
			return err
		}
		i := slices.IndexFunc(peers, func(p Peer) bool { return p.Name == name })
		if i < 0 {
			names := make([]string, len(peers))
			for j, p := range peers {
				names[j] = p.Name
			}
			slices.Sort(names)
			return fmt.Errorf("wireguard revoke %q: %w (phones: %s)", name, ErrUnknown, strings.Join(names, ", "))
		}
		gone = peers[i]
		return s.write(slices.Delete(peers, i, i+1))
	})
	return gone, err
}

// Load returns the phones for the running agent, checked against the tunnel
// subnet: a phone outside it (wireguard.address changed) is an error naming it.
func (s *Store) Load() ([]Peer, error) {
	if err := s.checkSubnet(); err != nil {
		return nil, err
	}
	peers, err := s.read()
	if err != nil {
		return nil, err
	}
	pfx := s.cfg.Address
	for _, p := range peers {
		if !pfx.Contains(p.Address) || p.Address == pfx.Addr() {
			return nil, fmt.Errorf("wireguard peers: %s: phone %q has address %s, outside the tunnel subnet %s (wireguard.address changed?): "+
				"revoke it (porthole-agent invite -revoke %s) and invite it again", s.path(PeersFile), p.Name, p.Address, pfx.Masked(), p.Name)
		}
	}
	return peers, nil
}

func (s *Store) checkSubnet() error {
	if !s.cfg.Address.IsValid() {
		return errors.New("wireguard invites: no tunnel address (wireguard.address)")
	}
	return nil
}

// Watch calls fn with the phones now, then each time they change, until ctx
// ends; fn runs on Watch's goroutine. It polls the file's identity, size and
// mtime every PollInterval: no dependency, any file system, and atomic
// replacement by rename shows as a new file. fn is called only when the
// phones differ from what it got last. A damaged or unreadable file calls
// fn(nil) (a revoke must never be undone by damage) and is logged once.
//
// Apply the difference to the device (remove the keys that went, add the
// new ones): replacing every peer would drop every phone's session.
func (s *Store) Watch(ctx context.Context, fn func([]Peer)) error {
	var (
		last     os.FileInfo // of the file last loaded; nil: none or missing
		racy     = true
		lastErr  string
		reported = false
		given    []Peer // what fn got last
		called   = false
	)
	deliver := func(peers []Peer) {
		if called && slices.EqualFunc(peers, given, Peer.equal) {
			return
		}
		called, given = true, peers
		fn(peers)
	}
	look := func() {
		fi, err := os.Stat(s.path(PeersFile))
		switch {
		case err == nil && last != nil && !racy && os.SameFile(fi, last) && fi.ModTime().Equal(last.ModTime()) && fi.Size() == last.Size():
			return
		case errors.Is(err, fs.ErrNotExist) && reported && last == nil && lastErr == "":
			return
		}
		peers, lerr := s.Load()
		if err == nil {
			last = fi
			racy = time.Since(fi.ModTime()) < racyFor
		} else {
			last = nil
		}
		if lerr != nil {
			if msg := lerr.Error(); msg != lastErr {
				s.log.Error("wireguard peers unreadable: no phone is accepted until it is fixed", "err", lerr)
				lastErr = msg
			}
			reported = true
			deliver(nil)
			return
		}
		if lastErr != "" {
			s.log.Info("wireguard peers readable again")
		}
		lastErr, reported = "", true
		if !called || !slices.EqualFunc(peers, given, Peer.equal) {
			s.log.Info("wireguard peers loaded", "phones", len(peers))
		}
		deliver(peers)
	}
	look()
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			look()
		}
	}
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func checkName(what, s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("invalid %s name %q: use 1-63 of a-z 0-9 - _ . starting with a letter or digit", what, s)
	}
	return nil
}

// read returns the stored phones; a missing file holds none.
func (s *Store) read() ([]Peer, error) {
	path := s.path(PeersFile)
	b, err := readSmall(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("wireguard peers: %w", err)
	}
	var pf peersFile
	if err := json.Unmarshal(b, &pf); err != nil {
		return nil, fmt.Errorf("wireguard peers: %s: %w", path, err)
	}
	if pf.Version != fileVersion {
		return nil, fmt.Errorf("wireguard peers: %s: version %d, this agent reads version %d", path, pf.Version, fileVersion)
	}
	if len(pf.Peers) > MaxPeers {
		return nil, fmt.Errorf("wireguard peers: %s: %d phones, more than the %d allowed", path, len(pf.Peers), MaxPeers)
	}
	peers := make([]Peer, 0, len(pf.Peers))
	names := map[string]bool{}
	keys := map[wgtypes.Key]bool{}
	addrs := map[netip.Addr]bool{}
	for i, r := range pf.Peers {
		damaged := func(why string) error {
			return fmt.Errorf("wireguard peers: %s: phone %d (%q) is damaged: %s", path, i, r.Name, why)
		}
		k, kerr := wgtypes.ParseKey(r.PublicKey)
		a, aerr := netip.ParseAddr(r.Address)
		switch {
		case checkName("phone", r.Name) != nil:
			return nil, damaged("bad name")
		case checkName("viewer", r.Viewer) != nil:
			return nil, damaged("bad viewer")
		case kerr != nil || k == (wgtypes.Key{}):
			return nil, damaged("bad public_key")
		case aerr != nil || a.Zone() != "" || a.Is4In6():
			return nil, damaged("bad address")
		case names[r.Name]:
			return nil, damaged("name listed twice")
		case keys[k]:
			return nil, damaged("public key listed twice")
		case addrs[a]:
			return nil, damaged("address listed twice")
		}
		names[r.Name], keys[k], addrs[a] = true, true, true
		peers = append(peers, Peer{Name: r.Name, Viewer: r.Viewer, PublicKey: k, Address: a, Created: r.Created})
	}
	return peers, nil
}

func (s *Store) write(peers []Peer) error {
	pf := peersFile{Version: fileVersion, Peers: make([]peerRecord, len(peers))}
	for i, p := range peers {
		pf.Peers[i] = peerRecord{Name: p.Name, Viewer: p.Viewer, PublicKey: p.PublicKey.String(), Address: p.Address.String(), Created: p.Created}
	}
	b, err := json.MarshalIndent(pf, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(s.cfg.StateDir, PeersFile, append(b, '\n'))
}

// locked runs fn holding an exclusive lock on the state directory's lock
// file, so two invite commands can't hand out the same address.
func (s *Store) locked(fn func() error) error {
	if err := os.MkdirAll(s.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("wireguard state: %w", err)
	}
	f, err := os.OpenFile(s.path(lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("wireguard state: %w", err)
	}
	defer f.Close() // releases the lock
	if err := sameOwner(f, s.cfg.StateDir); err != nil {
		return fmt.Errorf("wireguard state: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("wireguard state: lock %s: %w", f.Name(), err)
	}
	return fn()
}

// readSmall reads a regular file of at most maxFileSize bytes.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxFileSize)
	}
	return b, nil
}

// writeFile replaces dir/name with data, mode 0600, through a synced
// temporary file and a rename: readers see the old file or the new one.
func writeFile(dir, name string, data []byte) (err error) {
	tmp, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return fmt.Errorf("wireguard state: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("wireguard state: %s: %w", name, err)
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return err
	}
	if err = sameOwner(tmp, dir); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}

// sameOwner gives f the owner of dir when root writes into a directory that
// belongs to someone else: invite run as root for an agent running as its
// own user (systemd DynamicUser) must leave files that agent can read.
func sameOwner(f *os.File, dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	return f.Chown(int(st.Uid), int(st.Gid))
}
