package invite

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func newStore(t *testing.T, dir, addr string) *Store {
	t.Helper()
	s, err := New(Config{StateDir: dir, Address: netip.MustParsePrefix(addr), PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestAgentKeyMadeOnceAndPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s := newStore(t, dir, "10.77.0.1/24")
	k1, err := s.PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := newStore(t, dir, "10.77.0.1/24").PrivateKey()
	if err != nil || k1 != k2 {
		t.Fatalf("second load = %v, %v; want the same key", k2, err)
	}
	if m := mode(t, filepath.Join(dir, KeyFile)); m != 0o600 {
		t.Errorf("key file mode %v, want 0600", m)
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("state dir mode %v, want 0700", m)
	}
	// wg genkey's format, so `wg pubkey < wireguard.key` works.
	b, _ := os.ReadFile(filepath.Join(dir, KeyFile))
	if string(b) != k1.String()+"\n" {
		t.Errorf("key file = %q", b)
	}
	if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PrivateKey(); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged key: err = %v, want a refusal (never a silent new key)", err)
	}
}

func TestAddListRevoke(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, dir, "10.77.0.1/24")
	p1, priv1, err := s.Add("pixel", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if p1.Address != netip.MustParseAddr("10.77.0.2") || p1.PublicKey != priv1.PublicKey() || p1.Viewer != "alice" {
		t.Errorf("first peer = %+v", p1)
	}
	p2, _, err := s.Add("iphone", "bob")
	if err != nil || p2.Address != netip.MustParseAddr("10.77.0.3") {
		t.Fatalf("second peer = %+v, %v", p2, err)
	}
	if _, _, err := s.Add("pixel", "bob"); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate name: err = %v", err)
	}
	for _, bad := range [][2]string{{"", "alice"}, {"Pixel", "alice"}, {"a b", "alice"}, {"pixel2", ""}, {"pixel2", "x\n"}} {
		if _, _, err := s.Add(bad[0], bad[1]); err == nil {
			t.Errorf("Add(%q, %q) accepted", bad[0], bad[1])
		}
	}
	if m := mode(t, filepath.Join(dir, PeersFile)); m != 0o600 {
		t.Errorf("peers file mode %v, want 0600", m)
	}
	b, _ := os.ReadFile(filepath.Join(dir, PeersFile))
	if strings.Contains(string(b), priv1.String()) {
		t.Fatal("the phone's private key is in the peers file")
	}
	list, err := s.List()
	if err != nil || len(list) != 2 || list[0].Name != "iphone" || list[1].Name != "pixel" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if _, err := s.Revoke("pixel"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke("pixel"); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "phones: iphone") {
		t.Errorf("second revoke: err = %v", err)
	}
	// The freed address is the lowest free one again.
	p3, _, err := s.Add("tablet", "alice")
	if err != nil || p3.Address != netip.MustParseAddr("10.77.0.2") {
		t.Errorf("after revoke: %+v, %v", p3, err)
	}
	loaded, err := s.Load()
	if err != nil || len(loaded) != 2 {
		t.Errorf("Load = %+v, %v", loaded, err)
	}
}

func TestAddressesRunOut(t *testing.T) {
	// 10.77.0.0/29: .0 network, .7 broadcast, .3 the agent: phones get .1 .2 .4 .5 .6.
	s := newStore(t, t.TempDir(), "10.77.0.3/29")
	var got []string
	for i := range 5 {
		p, _, err := s.Add("p"+string(rune('a'+i)), "alice")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p.Address.String())
	}
	if strings.Join(got, " ") != "10.77.0.1 10.77.0.2 10.77.0.4 10.77.0.5 10.77.0.6" {
		t.Errorf("addresses = %v", got)
	}
	if _, _, err := s.Add("pf", "alice"); !errors.Is(err, ErrFull) {
		t.Errorf("full subnet: err = %v", err)
	}
	// IPv6: no broadcast address.
	s6 := newStore(t, t.TempDir(), "fd77::1/126")
	for i, want := range []string{"fd77::2", "fd77::3"} {
		p, _, err := s6.Add("p"+string(rune('a'+i)), "alice")
		if err != nil || p.Address.String() != want {
			t.Errorf("v6 peer %d = %v, %v; want %s", i, p.Address, err, want)
		}
	}
}

func TestConcurrentAddsGetDistinctAddresses(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	addrs := make([]netip.Addr, 8)
	for i := range addrs {
		wg.Go(func() {
			// a Store each, as separate invite commands would have
			p, _, err := newStore(t, dir, "10.77.0.1/24").Add("p"+string(rune('a'+i)), "alice")
			if err != nil {
				t.Error(err)
			}
			addrs[i] = p.Address
		})
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Errorf("address %v handed out twice: %v", a, addrs)
		}
		seen[a] = true
	}
	if l, _ := newStore(t, dir, "10.77.0.1/24").List(); len(l) != len(addrs) {
		t.Errorf("%d peers stored, want %d", len(l), len(addrs))
	}
}

func TestLoadRefusesDamage(t *testing.T) {
	key := func() string { k, _ := wgtypes.GeneratePrivateKey(); return k.PublicKey().String() }
	k := key()
	rec := func(name, viewer, pub, addr string) string {
		return `{"name":"` + name + `","viewer":"` + viewer + `","public_key":"` + pub + `","address":"` + addr + `"}`
	}
	tests := []struct{ name, file, want string }{
		{"not json", "{", "unexpected end"},
		{"version", `{"version":2,"peers":[]}`, "version 2"},
		{"bad key", `{"version":1,"peers":[` + rec("a", "alice", "xx", "10.77.0.2") + `]}`, "bad public_key"},
		{"zero key", `{"version":1,"peers":[` + rec("a", "alice", wgtypes.Key{}.String(), "10.77.0.2") + `]}`, "bad public_key"},
		{"bad address", `{"version":1,"peers":[` + rec("a", "alice", k, "10.77.0") + `]}`, "bad address"},
		{"no viewer", `{"version":1,"peers":[` + rec("a", "", k, "10.77.0.2") + `]}`, "bad viewer"},
		{"same key", `{"version":1,"peers":[` + rec("a", "alice", k, "10.77.0.2") + "," + rec("b", "alice", k, "10.77.0.3") + `]}`, "public key listed twice"},
		{"same address", `{"version":1,"peers":[` + rec("a", "alice", k, "10.77.0.2") + "," + rec("b", "alice", key(), "10.77.0.2") + `]}`, "address listed twice"},
		{"outside subnet", `{"version":1,"peers":[` + rec("a", "alice", k, "10.88.0.2") + `]}`, "outside the tunnel subnet 10.77.0.0/24"},
		{"agent's address", `{"version":1,"peers":[` + rec("a", "alice", k, "10.77.0.1") + `]}`, "outside the tunnel subnet"},
		{"too large", `{"version":1,"peers":[], "x":"` + strings.Repeat("x", maxFileSize) + `"}`, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, PeersFile), []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := newStore(t, dir, "10.77.0.1/24").Load()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load: err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestWatch follows adds, revokes, damage and removal: fn gets every change
// once, and a damaged file gives no peers at all.
func TestWatch(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, dir, "10.77.0.1/24")
	ctx, cancel := context.WithCancel(context.Background())
	updates := make(chan []Peer, 100)
	done := make(chan error)
	go func() { done <- s.Watch(ctx, func(p []Peer) { updates <- p }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	next := func(want int, names ...string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case p := <-updates:
				// Each change is delivered once: a repeat of the last
				// state (the file re-read while young) fails here.
				if len(p) != want {
					t.Fatalf("update with %d peers %+v, want %d %v", len(p), p, want, names)
				}
				for i, n := range names {
					if p[i].Name != n {
						t.Fatalf("update %+v, want %v", p, names)
					}
				}
				return
			case <-timeout:
				t.Fatalf("no update with %d peers", want)
			}
		}
	}
	next(0)
	if _, _, err := s.Add("pixel", "alice"); err != nil {
		t.Fatal(err)
	}
	next(1, "pixel")
	if _, _, err := s.Add("iphone", "alice"); err != nil {
		t.Fatal(err)
	}
	next(2, "pixel", "iphone")
	if _, err := s.Revoke("pixel"); err != nil {
		t.Fatal(err)
	}
	next(1, "iphone")
	if err := os.WriteFile(filepath.Join(dir, PeersFile), []byte("{damaged"), 0o600); err != nil {
		t.Fatal(err)
	}
	next(0)
	if err := os.Remove(filepath.Join(dir, PeersFile)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Add("tablet", "bob"); err != nil {
		t.Fatal(err)
	}
	next(1, "tablet")
}

func TestRootWritesForTheDirOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: checks that files written by root belong to the state dir's owner")
	}
	dir := t.TempDir()
	if err := os.Chown(dir, 4242, 4243); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, dir, "10.77.0.1/24")
	if _, _, err := s.Add("pixel", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PrivateKey(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{PeersFile, KeyFile, lockFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 4242 || st.Gid != 4243 {
			t.Errorf("%s owned by %d:%d, want 4242:4243", name, st.Uid, st.Gid)
		}
	}
}
