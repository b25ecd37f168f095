//go:build linux

package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// modulePath is the import path prefix of the lab's helper programs.
const modulePath = "github.com/porthole-dev/porthole"

// builds caches `go build` results for the life of the test process.
var builds struct {
	mu   sync.Mutex // guards the fields below; held during a build
	dir  string     // StateRoot/bin-<id>, registered to this process
	bins map[string]string
}

// Build compiles the main package pkg (an import path, or a path relative to
// the module such as "relay/cmd/porthole-relay") once per test process and
// returns the binary's path. Binaries live under StateRoot, owned by this
// process; a later run removes them once the process is gone.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	p, err := build(pkg)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	return p
}

// Helper returns the path of one of the lab's own helper programs
// (test/lab/<name>: "stunserver", "greeter"), built on first use.
func Helper(t testing.TB, name string) string {
	t.Helper()
	return Build(t, modulePath+"/test/lab/"+name)
}

func build(pkg string) (string, error) {
	if !strings.HasPrefix(pkg, modulePath+"/") {
		pkg = modulePath + "/" + strings.TrimPrefix(pkg, "./")
	}
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if p, ok := builds.bins[pkg]; ok {
		return p, nil
	}
	if builds.dir == "" {
		dir, err := register(StateRoot, "bin-"+newID())
		if err != nil {
			return "", fmt.Errorf("build %s: %w", pkg, err)
		}
		builds.dir = dir
		builds.bins = make(map[string]string)
	}
	goBin, err := goTool()
	if err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	// one directory per package keeps names unique and the binary's own name
	sub := filepath.Join(builds.dir, strings.ReplaceAll(strings.TrimPrefix(pkg, modulePath+"/"), "/", "_"))
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	out := filepath.Join(sub, path.Base(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg)
	cmd.Dir = moduleRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	builds.bins[pkg] = out
	return out, nil
}

var errNoGo = errors.New("go command not found (the lab builds its helper programs; put go in PATH)")

// goTool finds the go command: PATH, $GOROOT/bin, /usr/local/go/bin.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	for _, p := range []string{os.Getenv("GOROOT") + "/bin/go", "/usr/local/go/bin/go"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", errNoGo
}

// moduleRoot finds the directory of the module's go.mod: up from the working
// directory (go test runs in the package directory), else up from this
// source file (a test binary run elsewhere), else "" (the working directory).
func moduleRoot() string {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && bytes.Contains(b, []byte("module "+modulePath+"\n")) {
				return d
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return ""
}
