package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Config says what to build and where.
type Config struct {
	Root    string    // the source tree (holding go.mod); required
	Out     string    // where artifacts are written (dist/); created if missing; required
	Version string    // main.version and the version in file names; required
	MTime   time.Time // the time of every file in archives and images; zero: the Unix epoch
	Go      string    // the go command; "" = "go"
	BinDir  string    // per-target binaries go to BinDir/linux_<arch>; "" = Root/bin/release
	Targets []Target  // nil = Targets
	Logger  *slog.Logger
	// Build puts t's binaries (Programs) into dir; nil = Build with Go, Root
	// and Version. Tests use it to package stand-ins.
	Build func(ctx context.Context, t Target, dir string) error
}

var versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,99}$`)

func (c *Config) check() error {
	if c.Root == "" || c.Out == "" {
		return errors.New("release: Root and Out are required")
	}
	if !versionRE.MatchString(c.Version) {
		return fmt.Errorf("release: version %q: want letters, digits and . _ + ~ - (e.g. `git describe`)", c.Version)
	}
	for _, p := range []*string{&c.Root, &c.Out} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	if c.Go == "" {
		c.Go = "go"
	}
	if c.BinDir == "" {
		c.BinDir = filepath.Join(c.Root, "bin", "release")
	}
	if c.Targets == nil {
		c.Targets = Targets
	}
	if c.MTime.IsZero() {
		c.MTime = time.Unix(0, 0)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return os.MkdirAll(c.Out, 0o755)
}

// binaries builds the programs for t and returns their directory.
func (c *Config) binaries(ctx context.Context, t Target) (string, error) {
	dir := filepath.Join(c.BinDir, "linux_"+t.Name)
	c.Logger.Info("building", "arch", t.Name, "dir", dir)
	if c.Build != nil {
		return dir, c.Build(ctx, t, dir)
	}
	return dir, Build(ctx, c.Go, c.Root, c.Version, t, dir)
}

// ArchiveName is the release archive's file name for version and t.
func ArchiveName(version string, t Target) string {
	return fmt.Sprintf("porthole_%s_linux_%s.tar.gz", version, t.Name)
}

// Dist writes one archive per target (ArchiveName) into c.Out, each with a
// top directory of the same name holding both programs, README.md, LICENSE
// (when the tree has one) and deploy/ (systemd units, example configs,
// compose and cloud-init files), then rewrites SHA256SUMS. It returns the
// archives' paths.
func Dist(ctx context.Context, c Config) ([]string, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	var written []string
	for _, t := range c.Targets {
		bins, err := c.binaries(ctx, t)
		if err != nil {
			return written, err
		}
		name := ArchiveName(c.Version, t)
		prefix := strings.TrimSuffix(name, ".tar.gz") + "/"
		entries := []Entry{Dir(prefix, 0o755, 0, 0)}
		for _, p := range Programs {
			entries = append(entries, Entry{Name: prefix + p.Name, Mode: 0o755, Source: filepath.Join(bins, p.Name)})
		}
		for _, f := range []string{"README.md", "LICENSE"} {
			if _, err := os.Stat(filepath.Join(c.Root, f)); err == nil {
				entries = append(entries, Entry{Name: prefix + f, Mode: 0o644, Source: filepath.Join(c.Root, f)})
			} else if f == "README.md" {
				return written, fmt.Errorf("release: %w", err)
			}
		}
		tree, err := TreeEntries(c.Root, "deploy", prefix)
		if err != nil {
			return written, fmt.Errorf("release: %w", err)
		}
		entries = append(entries, tree...)
		dst := filepath.Join(c.Out, name)
		if err := writeFileAtomic(dst, func(w io.Writer) error { return WriteTarGz(w, entries, c.MTime) }); err != nil {
			return written, err
		}
		c.Logger.Info("wrote", "file", dst)
		written = append(written, dst)
	}
	return written, WriteSums(c.Out)
}

// IsArtifact says whether a file name in the output directory is a release
// artifact (an archive, package or image), the files SHA256SUMS covers.
func IsArtifact(name string) bool {
	return strings.HasPrefix(name, "porthole") &&
		(strings.HasSuffix(name, ".tar.gz") || strings.HasSuffix(name, ".deb") || strings.HasSuffix(name, ".oci.tar"))
}

// WriteSums writes dir/SHA256SUMS over every artifact in dir, in the format
// of sha256sum (check with `sha256sum -c SHA256SUMS`).
func WriteSums(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var lines []string
	for _, e := range ents {
		if !e.Type().IsRegular() || !IsArtifact(e.Name()) {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return err
		}
		lines = append(lines, hex.EncodeToString(h.Sum(nil))+"  "+e.Name()+"\n")
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i][66:] < lines[j][66:] })
	return writeFileAtomic(filepath.Join(dir, "SHA256SUMS"), func(w io.Writer) error {
		_, err := io.WriteString(w, strings.Join(lines, ""))
		return err
	})
}
