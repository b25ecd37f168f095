package release

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Target is one Linux architecture a release is built for.
type Target struct {
	Name       string // in file names: amd64, arm64, armv7
	GOARCH     string
	GOARM      string // "7" for armv7, else empty
	DebArch    string // Debian's name: amd64, arm64, armhf
	OCIArch    string // the OCI platform: amd64, arm64, arm
	OCIVariant string // v8 for arm64, v7 for armv7
}

// Targets are the architectures of a release: PCs and VPSes (amd64), 64-bit
// Raspberry Pi OS and ARM NASes (arm64), 32-bit Raspberry Pi OS (armv7).
var Targets = []Target{
	{Name: "amd64", GOARCH: "amd64", DebArch: "amd64", OCIArch: "amd64"},
	{Name: "arm64", GOARCH: "arm64", DebArch: "arm64", OCIArch: "arm64", OCIVariant: "v8"},
	{Name: "armv7", GOARCH: "arm", GOARM: "7", DebArch: "armhf", OCIArch: "arm", OCIVariant: "v7"},
}

// TargetNamed returns the target called name (amd64, arm64, armv7).
func TargetNamed(name string) (Target, error) {
	for _, t := range Targets {
		if t.Name == name {
			return t, nil
		}
	}
	return Target{}, fmt.Errorf("unknown architecture %q (have amd64, arm64, armv7)", name)
}

// Programs are the binaries every artifact holds, by their main package.
var Programs = []Program{
	{Name: "porthole-agent", Main: "./agent/cmd/porthole-agent"},
	{Name: "porthole-relay", Main: "./relay/cmd/porthole-relay"},
}

// Program is one binary of the release.
type Program struct {
	Name string // the binary's file name
	Main string // its main package, relative to the source root
}

// Build cross-compiles every program for t into dir (dir/porthole-agent, ...):
// static (CGO_ENABLED=0), -trimpath, stripped, with main.version set as
// `make build` does. The go build cache makes a second call for the same
// target cheap.
func Build(ctx context.Context, goCmd, root, version string, t Target, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	args := []string{"build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid= -X main.version=" + version, "-o", dir + string(filepath.Separator)}
	for _, p := range Programs {
		args = append(args, p.Main)
	}
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+t.GOARCH, "GOARM="+t.GOARM)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build for linux/%s: %w\n%s", t.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
