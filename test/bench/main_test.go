package bench

import (
	"os"
	"testing"
)

var binDir string

// tempDir is one directory for built binaries, removed after all tests and benchmarks.
func tempDir() (string, error) {
	var err error
	if binDir == "" {
		binDir, err = os.MkdirTemp("", "porthole-bench-bin-")
	}
	return binDir, err
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
