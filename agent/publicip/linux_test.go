//go:build linux

package publicip

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inNetns runs f on a thread moved into a new, empty network namespace
// (root only), so the test can add addresses without touching the host.
// run executes a command inside that namespace.
func inNetns(t *testing.T, f func(run func(args ...string))) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	for _, cmd := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Skipf("needs the %s command", cmd)
		}
	}
	errc := make(chan error, 1)
	go func() {
		// The thread is left locked: it dies with the goroutine, and its
		// namespace with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		ns := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		var runErr error
		run := func(args ...string) {
			if runErr != nil {
				return
			}
			out, err := exec.Command("nsenter", append([]string{"--net=" + ns, "ip"}, args...)...).CombinedOutput()
			if err != nil {
				runErr = fmt.Errorf("ip %v: %w: %s", args, err, out)
			}
		}
		f(run)
		errc <- runErr
	}()
	if err := <-errc; err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("no network namespaces here: %v", err)
		}
		t.Fatal(err)
	}
}

func TestLocalAddrsFlags(t *testing.T) {
	var got []LocalAddr
	var err error
	inNetns(t, func(run func(...string)) {
		run("link", "set", "lo", "up")
		run("-6", "addr", "add", "2001:db8:1::5/64", "dev", "lo", "preferred_lft", "0", "nodad")
		run("-6", "addr", "add", "2001:db8:1::6/64", "dev", "lo", "nodad")
		run("-4", "addr", "add", "203.0.113.9/24", "dev", "lo")
		got, err = LocalAddrs()
	})
	if err != nil {
		t.Fatal(err)
	}
	find := func(s string) *LocalAddr {
		for i := range got {
			if got[i].Addr == netip.MustParseAddr(s) {
				return &got[i]
			}
		}
		t.Fatalf("%s not listed in %+v", s, got)
		return nil
	}
	if a := find("2001:db8:1::5"); !a.Deprecated || a.Stable() || a.PrefixLen != 64 || a.Iface != "lo" {
		t.Errorf("deprecated address: %+v", a)
	}
	if a := find("2001:db8:1::6"); !a.Stable() {
		t.Errorf("stable address: %+v", a)
	}
	if a := find("203.0.113.9"); a.PrefixLen != 24 {
		t.Errorf("IPv4 address: %+v", a)
	}
	find("127.0.0.1")
	p, ok := PickIPv6(got, netip.MustParsePrefix("2001:db8:1::/64"), testAccept)
	if !ok || p != netip.MustParseAddr("2001:db8:1::6") {
		t.Errorf("PickIPv6 = %s, %v", p, ok)
	}
}

// TestWatcherNetlink adds an address in a private namespace and expects one
// signal; a link-local scope change is ignored.
func TestWatcherNetlink(t *testing.T) {
	inNetns(t, func(run func(...string)) {
		// The netlink socket is opened by Run on this (namespaced) thread;
		// the watcher's reader goroutine only reads from it.
		w := NewWatcher(WatcherConfig{Coalesce: 10 * time.Millisecond})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		ready := make(chan struct{})
		go func() {
			<-ready
			run("link", "set", "lo", "up")
			run("-4", "addr", "add", "203.0.113.9/24", "dev", "lo")
			select {
			case <-w.C():
			case <-time.After(5 * time.Second):
				t.Error("no signal for a new address")
			}
			run("-4", "addr", "del", "203.0.113.9/24", "dev", "lo")
			select {
			case <-w.C():
			case <-time.After(5 * time.Second):
				t.Error("no signal for a removed address")
			}
			cancel()
		}()
		// Subscribe on this thread before the changes are made.
		events, stop, err := subscribeAddrChanges()
		if err != nil {
			t.Errorf("subscribe: %v", err)
			cancel()
			close(ready)
			return
		}
		w.cfg.Events = events
		close(ready)
		done <- w.Run(ctx)
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// TestWatcherNetlinkStops: Run with the real subscription ends when ctx ends.
func TestWatcherNetlinkStops(t *testing.T) {
	w := NewWatcher(WatcherConfig{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestAddrChanged(t *testing.T) {
	msg := func(typ uint16, scope uint8) []byte {
		b := make([]byte, unix.SizeofNlMsghdr+unix.SizeofIfAddrmsg)
		binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
		binary.NativeEndian.PutUint16(b[4:], typ)
		b[unix.SizeofNlMsghdr+3] = scope
		return b
	}
	if !addrChanged(msg(unix.RTM_NEWADDR, unix.RT_SCOPE_UNIVERSE)) || !addrChanged(msg(unix.RTM_DELADDR, unix.RT_SCOPE_UNIVERSE)) {
		t.Error("global change not seen")
	}
	if addrChanged(msg(unix.RTM_NEWADDR, unix.RT_SCOPE_LINK)) || addrChanged(msg(unix.RTM_NEWLINK, 0)) {
		t.Error("link-scope address or link message counted")
	}
}
