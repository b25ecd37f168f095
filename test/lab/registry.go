//go:build linux

package lab

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The registry records what each lab (and each test process's build cache)
// created, so the next run can clean up after a crashed one without touching
// anything else: StateRoot/<id>/owner names the owning process (pid and start
// time, so a reused pid doesn't count), StateRoot/<id>/namespaces lists the
// namespaces it created, written before each one is created.

// StateRoot is where labs record what they created.
const StateRoot = "/tmp/porthole-lab"

// nsPrefix starts the name of every namespace the lab creates; the reaper
// deletes nothing else.
const nsPrefix = "ph"

const (
	ownerFile = "owner"
	nsFile    = "namespaces"
	newPrefix = ".new-"
)

// newID returns "ph" and 6 random hex digits: short enough for interface
// and namespace names, random enough that a stale lab never collides.
func newID() string {
	var b [3]byte
	rand.Read(b[:])
	return nsPrefix + hex.EncodeToString(b[:])
}

// ownerOf returns the owner record of process pid: "pid starttime".
func ownerOf(pid int) (string, error) {
	st, err := procStartTime(pid)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d %d", pid, st), nil
}

// procStartTime reads field 22 of /proc/PID/stat (start time in clock ticks
// since boot), which tells a process from a later one with the same pid.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	// the command name (field 2) is in parentheses and may hold spaces
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("process %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("process %d: malformed stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22 is the 20th after ")"
}

// ownerAlive reports whether the process an owner record names still runs.
func ownerAlive(rec string) bool {
	f := strings.Fields(rec)
	if len(f) != 2 {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return false
	}
	now, err := ownerOf(pid)
	return err == nil && now == strings.TrimSpace(rec)
}

// ownedByUs reports whether path belongs to the effective user.
func ownedByUs(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

// register creates root/<id> with this process as owner, atomically (a dir
// appears only with its owner file).
func register(root, id string) (string, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("registry: %w", err)
	}
	rec, err := ownerOf(os.Getpid())
	if err != nil {
		return "", fmt.Errorf("registry: %w", err)
	}
	tmp := filepath.Join(root, newPrefix+id)
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return "", fmt.Errorf("registry: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ownerFile), []byte(rec+"\n"), 0o644); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("registry: %w", err)
	}
	dir := filepath.Join(root, id)
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("registry: %w", err)
	}
	return dir, nil
}

// recordNamespace appends ns to the lab's list before it is created.
func recordNamespace(dir, ns string) error {
	f, err := os.OpenFile(filepath.Join(dir, nsFile), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	_, err = fmt.Fprintln(f, ns)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	return nil
}

// nsCleaner is what the reaper does to a stale namespace; tests replace it.
type nsCleaner interface {
	exists(ns string) bool
	// remove kills every process inside ns and deletes it.
	remove(ns string) error
}

// reap removes what dead owners left in root: their namespaces (only names
// with the lab's prefix that they recorded) and their directories. Live
// owners' entries are left alone. It returns the namespaces it removed.
func reap(root string, nc nsCleaner) ([]string, error) {
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reap: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		rec, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			// only a half-registered dir can lack an owner; give its
			// creator a minute to finish
			if fi, ierr := e.Info(); ierr == nil && strings.HasPrefix(e.Name(), newPrefix) && time.Since(fi.ModTime()) > time.Minute {
				os.RemoveAll(dir)
			}
			continue
		}
		if ownerAlive(string(rec)) || !ownedByUs(dir) {
			continue // in use, or planted by another user in the shared /tmp
		}
		list, _ := os.ReadFile(filepath.Join(dir, nsFile))
		ok := true
		for _, ns := range strings.Fields(string(list)) {
			if !strings.HasPrefix(ns, nsPrefix) || !nc.exists(ns) {
				continue
			}
			if err := nc.remove(ns); err != nil {
				errs = append(errs, fmt.Errorf("reap %s: %w", ns, err))
				ok = false
				continue
			}
			removed = append(removed, ns)
		}
		if ok {
			if err := os.RemoveAll(dir); err != nil {
				errs = append(errs, fmt.Errorf("reap: %w", err))
			}
		}
	}
	return removed, errors.Join(errs...)
}
