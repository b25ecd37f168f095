//go:build linux

package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// SkipMessage starts the message of every lab test that skips for lack of
// root or packages, so a skipped lab is easy to spot in `go test` output.
const SkipMessage = "LAB SKIPPED: needs root and miniupnpd-nftables (run make lab-deps)"

// EnvMode names the environment variable that changes what happens when the
// lab can't run: "require" fails the test instead of skipping (for CI, where
// a silently skipped lab is a bug), "off" skips even when the lab could run.
const EnvMode = "PORTHOLE_LAB"

// tools the lab runs; sbin paths are searched too because `sudo` and plain
// root shells don't always have them in PATH.
var tools = []string{"ip", "nft", "miniupnpd", "upnpc", "natpmpc"}

// Require skips the test (or fails it, PORTHOLE_LAB=require) unless the lab
// can run here. Up calls it; tests that need the lab without Up may too.
func Require(t testing.TB) {
	t.Helper()
	mode := os.Getenv(EnvMode)
	if mode == "off" {
		t.Skip(SkipMessage + ": " + EnvMode + "=off")
	}
	if err := checkOnce(); err != nil {
		if mode == "require" {
			t.Fatalf("lab required (%s=require) but cannot run: %v", EnvMode, err)
		}
		t.Skip(SkipMessage + ": " + err.Error())
	}
}

var errNotRoot = errors.New("not root")

var checkOnce = sync.OnceValue(check)

// check says what is missing for the lab, or nil.
func check() error {
	var problems []error
	if os.Geteuid() != 0 {
		problems = append(problems, errNotRoot)
	}
	for _, tool := range tools {
		if _, err := lookTool(tool); err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", tool, err))
		}
	}
	if p, err := lookTool("miniupnpd"); err == nil {
		out, _ := exec.Command(p, "--version").CombinedOutput()
		if !strings.Contains(string(out), "nftables") {
			problems = append(problems, errors.New("miniupnpd is not the nftables build (install miniupnpd-nftables)"))
		}
	}
	if _, err := goTool(); err != nil {
		problems = append(problems, err)
	}
	return errors.Join(problems...)
}

// lookTool finds a program in PATH or the sbin directories.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := dir + "/" + name
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}
