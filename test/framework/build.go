package framework

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

// ModulePath is the import path of the Porthole module.
const ModulePath = "github.com/porthole-dev/porthole"

// Main packages of the module that tests start as programs.
const (
	RelayPkg  = "relay/cmd/porthole-relay"
	AgentPkg  = "agent/cmd/porthole-agent"
	CamsimPkg = "internal/camsim/cmd/camsim"
	// BackendPkg is the mock LAN service as a program of its own (cmd/backend).
	BackendPkg = "test/framework/cmd/backend"
)

// Builder compiles main packages of the module once and keeps the binaries
// for the life of the process. Its zero value builds into a temporary
// directory that Remove deletes. It is safe for concurrent use; concurrent
// builds of the same package wait for the first.
type Builder struct {
	// Dir returns the directory for the binaries; it is called once, on the
	// first build. Nil means a new directory under os.TempDir, removed by
	// Remove.
	Dir func() (string, error)

	mu    sync.Mutex // guards the fields below; held during a build
	dir   string
	owned bool // dir was made here, Remove deletes it
	bins  map[string]string
}

// Default is the Builder of Build, Binary, RelayBinary and AgentBinary.
var Default = &Builder{}

// Build compiles pkg with Default; see Builder.Build.
func Build(pkg string) (string, error) { return Default.Build(pkg) }

// Binary is Build for tests: it ends the test on error.
func Binary(tb testing.TB, pkg string) string {
	tb.Helper()
	p, err := Default.Build(pkg)
	if err != nil {
		tb.Fatalf("framework: %v", err)
	}
	return p
}

// RelayBinary is the porthole-relay binary, built on first use.
func RelayBinary(tb testing.TB) string { tb.Helper(); return Binary(tb, RelayPkg) }

// AgentBinary is the porthole-agent binary, built on first use.
func AgentBinary(tb testing.TB) string { tb.Helper(); return Binary(tb, AgentPkg) }

// Build compiles the main package pkg (an import path, or a path relative to
// the module root such as "relay/cmd/porthole-relay") on first use and returns
// the binary's path.
func (b *Builder) Build(pkg string) (string, error) {
	if !strings.HasPrefix(pkg, ModulePath+"/") {
		pkg = ModulePath + "/" + strings.TrimPrefix(pkg, "./")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.bins[pkg]; ok {
		return p, nil
	}
	if b.dir == "" {
		var dir string
		var err error
		if b.Dir != nil {
			dir, err = b.Dir()
		} else {
			dir, err = os.MkdirTemp("", "porthole-bin-")
			b.owned = err == nil
		}
		if err != nil {
			return "", fmt.Errorf("build %s: %w", pkg, err)
		}
		b.dir = dir
		b.bins = make(map[string]string)
	}
	goBin, err := GoTool()
	if err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	root := ModuleRoot()
	if root == "" {
		return "", fmt.Errorf("build %s: %w", pkg, ErrNoModule)
	}
	// One directory per package keeps the binary's own name and names unique.
	sub := filepath.Join(b.dir, strings.ReplaceAll(strings.TrimPrefix(pkg, ModulePath+"/"), "/", "_"))
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	out := filepath.Join(sub, path.Base(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg)
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, msg)
	}
	b.bins[pkg] = out
	return out, nil
}

// Remove deletes the binaries' directory if the Builder made it. Call it from
// TestMain after m.Run; builds after Remove start again.
func (b *Builder) Remove() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var err error
	if b.owned && b.dir != "" {
		err = os.RemoveAll(b.dir)
	}
	b.dir, b.owned, b.bins = "", false, nil
	return err
}

// ErrNoGo means the go command was not found.
var ErrNoGo = errors.New("go command not found (the tests build the binaries; put go in PATH)")

// ErrNoModule means the module's root directory was not found.
var ErrNoModule = errors.New("module root not found (run from inside the module)")

// GoTool finds the go command: PATH, $GOROOT/bin, /usr/local/go/bin.
func GoTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	for _, p := range []string{os.Getenv("GOROOT") + "/bin/go", "/usr/local/go/bin/go"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", ErrNoGo
}

// ModuleRoot is the directory of the module's go.mod: up from the working
// directory (go test runs in the package directory), else up from this source
// file (a binary run elsewhere); "" if neither finds it.
func ModuleRoot() string {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && bytes.Contains(b, []byte("module "+ModulePath+"\n")) {
				return d
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return ""
}
