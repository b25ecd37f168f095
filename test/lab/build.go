//go:build linux

package lab

import (
	"testing"

	"github.com/porthole-dev/porthole/test/framework"
)

// modulePath is the import path prefix of the lab's helper programs.
const modulePath = framework.ModulePath

// builder builds the lab's programs once per test process (test/framework),
// into StateRoot/bin-<id>: registered to this process, so a later run removes
// the binaries once the process is gone.
var builder = &framework.Builder{Dir: func() (string, error) {
	return register(StateRoot, "bin-"+newID())
}}

// Build compiles the main package pkg (an import path, or a path relative to
// the module such as "relay/cmd/porthole-relay") once per test process and
// returns the binary's path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	p, err := builder.Build(pkg)
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

// goTool finds the go command (see framework.GoTool).
func goTool() (string, error) { return framework.GoTool() }
