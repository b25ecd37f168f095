//go:build linux

package lab

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestRouterConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    Options
		want    []string
		notWant []string
	}{
		{"default", Options{},
			[]string{"enable_upnp=yes", "enable_natpmp=yes", "force_igd_desc_v1=no", "ext_perform_stun=yes", "ext_stun_host=203.0.113.1", "ext_stun_port=3478", "upnp_nat_chain=prerouting_miniupnpd"},
			[]string{"ext_ip="}},
		{"no stun", Options{NoSTUN: true}, []string{"enable_upnp=yes"}, []string{"ext_perform_stun", "ext_stun_host"}},
		{"natpmp only", Options{NoUPnP: true}, []string{"enable_upnp=no", "enable_natpmp=yes"}, nil},
		{"upnp only v1", Options{NoNATPMP: true, IGDv1: true}, []string{"enable_upnp=yes", "enable_natpmp=no", "force_igd_desc_v1=yes"}, nil},
		{"extra", Options{RouterConfig: []string{"clean_ruleset_interval=5"}}, []string{"clean_ruleset_interval=5"}, nil},
	} {
		conf := routerConfig(tc.opts)
		lines := strings.Split(conf, "\n")
		for _, w := range tc.want {
			if !slices.Contains(lines, w) {
				t.Errorf("%s: config lacks %q:\n%s", tc.name, w, conf)
			}
		}
		for _, w := range tc.notWant {
			if strings.Contains(conf, w) {
				t.Errorf("%s: config has %q:\n%s", tc.name, w, conf)
			}
		}
		// miniupnpd applies the first matching permission rule: extra
		// lines must not land after the final deny
		if !strings.HasSuffix(conf, "allow 1024-65535 192.168.77.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n") {
			t.Errorf("%s: permission rules not last:\n%s", tc.name, conf)
		}
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := newID()
		// "<id>-wan" must stay a valid, short namespace name
		if !strings.HasPrefix(id, nsPrefix) || len(id) != 8 {
			t.Fatalf("id %q", id)
		}
		seen[id] = true
	}
	if len(seen) < 95 {
		t.Errorf("only %d distinct ids of 100", len(seen))
	}
}

func TestOwnerAlive(t *testing.T) {
	self, err := ownerOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !ownerAlive(self) {
		t.Errorf("own record %q not alive", self)
	}
	pid := strings.Fields(self)[0]
	for _, rec := range []string{pid + " 1", "0 0", "", "garbage", "99999999 1"} {
		if ownerAlive(rec) {
			t.Errorf("record %q alive, want dead (pid reused or gone)", rec)
		}
	}
}

// fakeNS records what the reaper does instead of touching namespaces.
type fakeNS struct {
	present map[string]bool
	removed []string
	fail    string
}

func (f *fakeNS) exists(ns string) bool { return f.present[ns] }
func (f *fakeNS) remove(ns string) error {
	if ns == f.fail {
		return errors.New("busy")
	}
	f.removed = append(f.removed, ns)
	return nil
}

func TestReap(t *testing.T) {
	root := t.TempDir()
	self, _ := ownerOf(os.Getpid())
	mk := func(id, owner, namespaces string) string {
		dir := filepath.Join(root, id)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if owner != "" {
			os.WriteFile(filepath.Join(dir, ownerFile), []byte(owner+"\n"), 0o644)
		}
		os.WriteFile(filepath.Join(dir, nsFile), []byte(namespaces), 0o644)
		return dir
	}
	live := mk("phlive00", self, "phlive00-wan\n")
	dead := mk("phdead00", "99999999 1", "phdead00-wan\nphdead00-lan\nsomeoneelse\n")
	stuck := mk("phdead01", "99999999 1", "phdead01-rtr\n")
	fresh := mk(newPrefix+"phnew000", "", "")

	nc := &fakeNS{
		present: map[string]bool{"phlive00-wan": true, "phdead00-wan": true, "someoneelse": true, "phdead01-rtr": true},
		fail:    "phdead01-rtr",
	}
	removed, err := reap(root, nc)
	if err == nil {
		t.Error("reap hid the failure to remove phdead01-rtr")
	}
	// phdead00-lan is recorded but gone; someoneelse lacks the prefix
	if want := []string{"phdead00-wan"}; !slices.Equal(removed, want) || !slices.Equal(nc.removed, want) {
		t.Errorf("removed %v (cleaner saw %v), want %v", removed, nc.removed, want)
	}
	for dir, wantExists := range map[string]bool{live: true, dead: false, stuck: true, fresh: true} {
		if _, err := os.Stat(dir); (err == nil) != wantExists {
			t.Errorf("%s exists=%v, want %v", filepath.Base(dir), err == nil, wantExists)
		}
	}
}

func TestRegister(t *testing.T) {
	root := filepath.Join(t.TempDir(), "state")
	dir, err := register(root, "phabc123")
	if err != nil {
		t.Fatal(err)
	}
	if err := recordNamespace(dir, "phabc123-wan"); err != nil {
		t.Fatal(err)
	}
	if err := recordNamespace(dir, "phabc123-lan"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, nsFile))
	if string(b) != "phabc123-wan\nphabc123-lan\n" {
		t.Errorf("namespaces file %q", b)
	}
	rec, _ := os.ReadFile(filepath.Join(dir, ownerFile))
	if !ownerAlive(string(rec)) {
		t.Errorf("owner %q not this live process", rec)
	}
	if _, err := register(root, "phabc123"); err == nil {
		t.Error("second register of the same id succeeded")
	}
	// a live owner's lab survives a reap
	if _, err := reap(root, &fakeNS{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("live lab reaped: %v", err)
	}
}

func TestSocketTableHas(t *testing.T) {
	tcp := []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100A8C0:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0A4DA8C0:2162 0A71CBCB:AB12 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
`)
	if !socketTableHas(tcp, true, 5000) {
		t.Error("listener on 5000 not found")
	}
	if socketTableHas(tcp, true, 8546) {
		t.Error("established socket on 8546 taken for a listener")
	}
	if !socketTableHas(tcp, false, 8546) {
		t.Error("any-state socket on 8546 not found")
	}
	if socketTableHas(tcp, false, 1388) || socketTableHas(nil, false, 0) {
		t.Error("false positive")
	}
}
