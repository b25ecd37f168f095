package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

const srcRoot = "../.."

// stubConfig packages stand-in binaries (shell scripts printing a version)
// from the real source tree into a temporary output directory.
func stubConfig(t *testing.T, targets ...Target) Config {
	t.Helper()
	return Config{Root: srcRoot, Out: t.TempDir(), BinDir: t.TempDir(), Version: "v1.2.3-4-gabcdef",
		MTime: time.Unix(1_700_000_000, 0), Targets: targets,
		Build: func(_ context.Context, tg Target, dir string) error {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			for _, p := range Programs {
				script := "#!/bin/sh\necho " + p.Name + " stub-" + tg.Name + "\n"
				if err := os.WriteFile(filepath.Join(dir, p.Name), []byte(script), 0o755); err != nil {
					return err
				}
			}
			return nil
		}}
}

// readTar returns the headers and contents of a tar stream by name.
func readTar(t *testing.T, r io.Reader) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	hs, data := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hs, data
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		hs[h.Name], data[h.Name] = h, b
	}
}

func TestWriteTarDeterministic(t *testing.T) {
	ents := []Entry{{Name: "a/b/c.txt", Mode: 0o600, UID: 7, GID: 8, Data: []byte("x")}, Dir("d", 0o700, 1, 1)}
	var one, two bytes.Buffer
	mt := time.Unix(1_600_000_000, 0)
	if err := WriteTarGz(&one, ents, mt); err != nil {
		t.Fatal(err)
	}
	if err := WriteTarGz(&two, []Entry{ents[1], ents[0]}, mt); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(one.Bytes(), two.Bytes()) {
		t.Error("the same entries in another order gave other bytes")
	}
	var plain bytes.Buffer
	if err := WriteTar(&plain, ents, mt); err != nil {
		t.Fatal(err)
	}
	hs, data := readTar(t, &plain)
	for _, d := range []string{"a/", "a/b/", "d/"} {
		if h, ok := hs[d]; !ok || h.Typeflag != tar.TypeDir {
			t.Errorf("directory %s missing", d)
		}
	}
	if h := hs["a/b/c.txt"]; h == nil || h.Mode != 0o600 || h.Uid != 7 || h.Gid != 8 || !h.ModTime.Equal(mt) || string(data["a/b/c.txt"]) != "x" {
		t.Errorf("a/b/c.txt: %+v", h)
	}
	if err := WriteTar(io.Discard, []Entry{ents[0], ents[0]}, mt); err == nil {
		t.Error("a name listed twice was accepted")
	}
}

func TestDebVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3": "1.2.3", "1.2.3-4-gabc": "1.2.3+4+gabc", "4959c09": "4959c09",
		"abc1234-dirty": "0~gitabc1234+dirty", "dev": "0~gitdev",
	} {
		if got := DebVersion(in); got != want {
			t.Errorf("DebVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPackageUnit adapts the real units of deploy/systemd: any change there
// that PackageUnit no longer understands fails here, not in a user's dpkg -i.
func TestPackageUnit(t *testing.T) {
	for _, p := range Programs {
		src, err := os.ReadFile(filepath.Join(srcRoot, "deploy/systemd", p.Name+".service"))
		if err != nil {
			t.Fatal(err)
		}
		u, err := PackageUnit(src, p.Name)
		if err != nil {
			t.Fatal(err)
		}
		s := string(u)
		for _, want := range []string{
			"\nExecStart=/usr/bin/" + p.Name + " -config /etc/porthole/",
			"\nExecStartPre=+/usr/bin/" + p.Name + " -config /etc/porthole/",
			"\nUser=porthole\nGroup=porthole\n", "\n[Install]\n",
		} {
			if !strings.Contains(s, want) {
				t.Errorf("%s: packaged unit lacks %q", p.Name, want)
			}
		}
		for _, bad := range []string{"/usr/local/bin", "DynamicUser=", "install -m"} {
			if strings.Contains(s, bad) {
				t.Errorf("%s: packaged unit still has %q", p.Name, bad)
			}
		}
		if _, err := PackageUnit(bytes.Replace(src, []byte("DynamicUser=yes"), nil, 1), p.Name); err == nil {
			t.Errorf("%s: a unit without DynamicUser=yes was adapted silently", p.Name)
		}
	}
}

func TestDistArchiveContents(t *testing.T) {
	c := stubConfig(t, Targets[2])
	files, err := Dist(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || filepath.Base(files[0]) != "porthole_v1.2.3-4-gabcdef_linux_armv7.tar.gz" {
		t.Fatalf("wrote %q", files)
	}
	checkArchive(t, files[0], "stub-armv7")
	checkSums(t, c.Out, 1)
}

// checkArchive checks a release archive's layout; the programs' contents
// must hold want.
func checkArchive(t *testing.T, file, want string) map[string][]byte {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	hs, data := readTar(t, zr)
	top := strings.TrimSuffix(filepath.Base(file), ".tar.gz") + "/"
	for _, name := range []string{"porthole-agent", "porthole-relay", "README.md",
		"deploy/systemd/porthole-agent.service", "deploy/systemd/porthole-relay.service",
		"deploy/examples/agent.yaml", "deploy/examples/relay.yaml",
		"deploy/compose/relay.yaml", "deploy/compose/agent.yaml", "deploy/cloud-init/relay.yaml"} {
		h, ok := hs[top+name]
		if !ok {
			t.Errorf("%s: no %s", filepath.Base(file), top+name)
			continue
		}
		if strings.HasPrefix(name, "porthole-") && (h.Mode != 0o755 || !bytes.Contains(data[top+name], []byte(want))) {
			t.Errorf("%s: %s mode %o, not the build's binary", filepath.Base(file), name, h.Mode)
		}
	}
	for name, h := range hs {
		if !strings.HasPrefix(name, top) || h.Uid != 0 || h.Uname != "" {
			t.Errorf("%s: entry %s (uid %d %q) outside %s or not root's", filepath.Base(file), name, h.Uid, h.Uname, top)
		}
	}
	return data
}

// checkSums runs sha256sum -c on dir's SHA256SUMS, which must list n files.
func checkSums(t *testing.T, dir string, n int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(b), "\n"); got != n {
		t.Errorf("SHA256SUMS lists %d files, want %d:\n%s", got, n, b)
	}
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Log("sha256sum not installed: SHA256SUMS not verified")
		return
	}
	cmd := exec.Command("sha256sum", "--strict", "-c", "SHA256SUMS")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c: %v\n%s", err, out)
	}
}

func TestImageLayout(t *testing.T) {
	c := stubConfig(t, Targets[1])
	old := CACertsFile
	CACertsFile = filepath.Join(t.TempDir(), "ca.crt")
	t.Cleanup(func() { CACertsFile = old })
	if err := os.WriteFile(CACertsFile, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := Images(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Fatalf("wrote %q", files)
	}
	for _, p := range Programs {
		file := filepath.Join(c.Out, ImageName(p.Name, c.Version, Targets[1]))
		img, layer := checkImage(t, file, p.Name, c.Version)
		if cf, _ := img.ConfigFile(); cf.Architecture != "arm64" || cf.Variant != "v8" || cf.OS != "linux" {
			t.Errorf("%s: platform %s/%s/%s", p.Name, cf.OS, cf.Architecture, cf.Variant)
		}
		if !bytes.Contains(layer["usr/bin/"+p.Name], []byte("stub-arm64")) {
			t.Errorf("%s: the image's binary is not the build's", p.Name)
		}
		if !bytes.HasPrefix(layer["etc/ssl/certs/ca-certificates.crt"], []byte("-----BEGIN")) {
			t.Errorf("%s: no CA certificates", p.Name)
		}
	}
	checkSums(t, c.Out, 2)
}

// checkImage reads an OCI archive written by Images: the OCI layout's tags and
// the docker-save manifest, the config (non-root user, entrypoint, version
// label) and the single layer's files (returned by name).
func checkImage(t *testing.T, file, prog, version string) (v1.Image, map[string][]byte) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, files := readTar(t, f)
	dir := t.TempDir()
	for name, b := range files {
		if strings.HasSuffix(name, "/") {
			continue
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var dm []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &dm); err != nil || len(dm) != 1 {
		t.Fatalf("%s: manifest.json: %v %s", file, err, files["manifest.json"])
	}
	if want := []string{prog + ":" + version, prog + ":latest"}; strings.Join(dm[0].RepoTags, " ") != strings.Join(want, " ") {
		t.Errorf("%s: RepoTags %q, want %q", file, dm[0].RepoTags, want)
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != version {
		t.Fatalf("%s: index %+v", file, im.Manifests)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.TrimPrefix(prog, "porthole-")
	if cf.Config.User != "65532:65532" {
		t.Errorf("%s: user %q, want the non-root 65532:65532", prog, cf.Config.User)
	}
	if strings.Join(cf.Config.Entrypoint, " ") != "/usr/bin/"+prog || strings.Join(cf.Config.Cmd, " ") != "-config /etc/porthole/"+conf+".yaml" {
		t.Errorf("%s: entrypoint %q cmd %q", prog, cf.Config.Entrypoint, cf.Config.Cmd)
	}
	if cf.Config.Labels["org.opencontainers.image.version"] != version {
		t.Errorf("%s: labels %q", prog, cf.Config.Labels)
	}
	if dm[0].Config != "blobs/sha256/"+mustHex(t, img.ConfigName) {
		t.Errorf("%s: manifest.json config %s is not the index's", prog, dm[0].Config)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%s: %d layers, %v", prog, len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	hs, data := readTar(t, rc)
	if !strings.Contains(string(data["etc/passwd"]), ":65532:65532:") {
		t.Errorf("%s: /etc/passwd has no user 65532:\n%s", prog, data["etc/passwd"])
	}
	if h := hs["var/lib/"+prog+"/"]; h == nil || h.Uid != 65532 || h.Mode != 0o700 {
		t.Errorf("%s: state directory not the user's: %+v", prog, h)
	}
	if h := hs["usr/bin/"+prog]; h == nil || h.Mode != 0o755 {
		t.Errorf("%s: no executable /usr/bin/%s", prog, prog)
	}
	return img, data
}

func mustHex(t *testing.T, f func() (v1.Hash, error)) string {
	t.Helper()
	h, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return h.Hex
}

func TestDebContents(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("SKIPPED: dpkg-deb not installed; the package was not inspected")
	}
	c := stubConfig(t, Targets[0])
	files, err := Deb(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || filepath.Base(files[0]) != "porthole_v1.2.3-4-gabcdef_amd64.deb" {
		t.Fatalf("wrote %q", files)
	}
	field := func(f string) string {
		out, err := exec.Command("dpkg-deb", "-f", files[0], f).Output()
		if err != nil {
			t.Fatalf("dpkg-deb -f %s: %v", f, err)
		}
		return strings.TrimSpace(string(out))
	}
	if v, a, d := field("Version"), field("Architecture"), field("Depends"); v != "1.2.3+4+gabcdef" || a != "amd64" || d != "adduser" {
		t.Errorf("Version %q Architecture %q Depends %q", v, a, d)
	}
	ctrl := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-e", files[0], ctrl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -e: %v\n%s", err, out)
	}
	conffiles, err := os.ReadFile(filepath.Join(ctrl, "conffiles"))
	if err != nil || string(conffiles) != "/etc/porthole/agent.yaml\n/etc/porthole/relay.yaml\n" {
		t.Errorf("conffiles %q (%v)", conffiles, err)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if fi, err := os.Stat(filepath.Join(ctrl, s)); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("maintainer script %s missing or not executable (%v)", s, err)
		}
	}
	out, err := exec.Command("dpkg-deb", "-c", files[0]).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`^-rwxr-xr-x root/root .* \./usr/bin/porthole-agent$`, `^-rwxr-xr-x root/root .* \./usr/bin/porthole-relay$`,
		`^-rw-r--r-- root/root .* \./usr/lib/systemd/system/porthole-agent\.service$`, `^-rw-r--r-- root/root .* \./usr/lib/systemd/system/porthole-relay\.service$`,
		`^-rw-r--r-- root/root .* \./etc/porthole/relay\.yaml$`, `^-rw-r--r-- root/root .* \./etc/porthole/agent\.yaml$`,
		`\./usr/lib/sysctl\.d/90-porthole\.conf$`} {
		if !regexp.MustCompile("(?m)" + want).Match(out) {
			t.Errorf("package lacks %s:\n%s", want, out)
		}
	}
	checkSums(t, c.Out, 1)
}

// TestMaintainerScripts: the package's scripts parse as POSIX sh (dpkg runs
// them with /bin/sh, dash on Debian), stop at a failing command (set -e) and
// end in exit 0 for the arguments they ignore (upgrade, failed-upgrade, ...).
func TestMaintainerScripts(t *testing.T) {
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		p := filepath.Join(srcRoot, "deploy/debian", s)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "#!/bin/sh\n") || !strings.Contains(string(b), "\nset -e\n") || !strings.HasSuffix(string(b), "\nexit 0\n") {
			t.Errorf("%s: want #!/bin/sh, set -e and a final exit 0", s)
		}
		if out, err := exec.Command("sh", "-n", p).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", s, err, out)
		}
	}
}
