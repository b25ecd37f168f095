// Package profiling lets a developer take a CPU profile of a running daemon
// without rebuilding it: with PORTHOLE_CPUPROFILE=DIR in its environment,
// porthole-agent and porthole-relay profile from start to a clean exit
// (SIGTERM, SIGINT) and write DIR/PROGRAM-PID.pprof, for `go tool pprof`.
// Without the variable nothing happens. The bench keeps profiles this way
// (PORTHOLE_BENCH_LOGS); the README's "Performance" section says how.
package profiling

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
)

// Start begins the CPU profile if PORTHOLE_CPUPROFILE is set; the returned
// function ends it and writes the file. Problems are reported on stderr: a
// profile is never a reason for a daemon not to run.
func Start() (stop func()) {
	dir := os.Getenv("PORTHOLE_CPUPROFILE")
	if dir == "" {
		return func() {}
	}
	name := filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", filepath.Base(os.Args[0]), os.Getpid()))
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "profiling:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "profiling:", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "profiling:", err)
		}
	}
}
