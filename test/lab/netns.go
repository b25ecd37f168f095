//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns add` mounts named namespaces.
const netnsDir = "/run/netns"

// ipCmd runs `ip args...` and returns its output, with the output in the error.
func ipCmd(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// hostNS implements nsCleaner with the real `ip netns`.
type hostNS struct{}

var _ nsCleaner = hostNS{}

func (hostNS) exists(ns string) bool {
	_, err := os.Stat(netnsDir + "/" + ns)
	return err == nil
}

func (hostNS) remove(ns string) error {
	killAllIn(ns)
	_, err := ipCmd(context.Background(), "netns", "del", ns)
	return err
}

// killAllIn SIGKILLs every process inside ns and returns their pids. Only
// called for namespaces the lab created: everything in them is ours, and a
// process left inside would keep the namespace alive after `ip netns del`.
func killAllIn(ns string) []int {
	out, err := ipCmd(context.Background(), "netns", "pids", ns)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// nsInode is the inode that identifies a named namespace; /proc/PID/ns/net of
// a process inside it reads "net:[inode]".
func nsInode(ns string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(netnsDir+"/"+ns, &st); err != nil {
		return 0, fmt.Errorf("netns %s: %w", ns, err)
	}
	return st.Ino, nil
}

// inProcNS reports whether process pid is inside the namespace with inode ino.
func inProcNS(pid int, ino uint64) bool {
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	return err == nil && link == fmt.Sprintf("net:[%d]", ino)
}

// errNetnsRestore means the thread could not return to its namespace; it was
// discarded (the goroutine exits still locked), so nothing else runs there.
var errNetnsRestore = errors.New("restore network namespace")

// inNetns runs fn on an OS thread switched into the named namespace. Sockets
// fn creates stay in that namespace for their whole life, wherever they are
// used later. The thread is switched back before it is released to other
// goroutines; if that fails it is thrown away.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(netnsDir + "/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("%w: %w", errNetnsRestore, err) // stay locked: the thread dies with us
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// DialContext connects from inside namespace r, as a program there would
// (for example a viewer on the internet side: l.DialContext(ctx, WAN, "tcp",
// PublicAddr+":18554")).
func (l *Lab) DialContext(ctx context.Context, r Role, network, address string) (net.Conn, error) {
	return l.dial(ctx, r, nil, network, address)
}

// DialFrom is DialContext from a given local address, e.g. a viewer that
// isn't the relay: l.DialFrom(ctx, WAN, ViewerAddr, "tcp", PublicAddr+":10554").
// (The agent takes any connection from the relay's address for a probe.)
func (l *Lab) DialFrom(ctx context.Context, r Role, local, network, address string) (net.Conn, error) {
	ip := net.ParseIP(local)
	if ip == nil {
		return nil, fmt.Errorf("dial from %q: not an IP address", local)
	}
	var laddr net.Addr
	switch network {
	case "tcp", "tcp4", "tcp6":
		laddr = &net.TCPAddr{IP: ip}
	case "udp", "udp4", "udp6":
		laddr = &net.UDPAddr{IP: ip}
	default:
		return nil, fmt.Errorf("dial from %s: network %q: %w", local, network, net.UnknownNetworkError(network))
	}
	return l.dial(ctx, r, laddr, network, address)
}

func (l *Lab) dial(ctx context.Context, r Role, laddr net.Addr, network, address string) (net.Conn, error) {
	ns, err := l.nsName(r)
	if err != nil {
		return nil, err
	}
	var c net.Conn
	err = inNetns(ns, func() error {
		d := net.Dialer{LocalAddr: laddr}
		var derr error
		c, derr = d.DialContext(ctx, network, address)
		return derr
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s from %s: %w", network, address, r, err)
	}
	return c, nil
}

// Do runs fn on a thread inside namespace r: the sockets fn opens stay in r
// (for example a wireguard-go device's, opened by its Up).
func (l *Lab) Do(r Role, fn func() error) error {
	ns, err := l.nsName(r)
	if err != nil {
		return err
	}
	return inNetns(ns, fn)
}

// Listen listens inside namespace r (for in-process servers in a test).
func (l *Lab) Listen(r Role, network, address string) (net.Listener, error) {
	ns, err := l.nsName(r)
	if err != nil {
		return nil, err
	}
	var ln net.Listener
	err = inNetns(ns, func() error {
		var lerr error
		ln, lerr = net.Listen(network, address)
		return lerr
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, address, r, err)
	}
	return ln, nil
}

// ListenPacket is Listen for datagram sockets.
func (l *Lab) ListenPacket(r Role, network, address string) (net.PacketConn, error) {
	ns, err := l.nsName(r)
	if err != nil {
		return nil, err
	}
	var pc net.PacketConn
	err = inNetns(ns, func() error {
		var lerr error
		pc, lerr = net.ListenPacket(network, address)
		return lerr
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, address, r, err)
	}
	return pc, nil
}
