package release

import (
	"debug/elf"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The TestArtifact tests check what `make release` wrote: `make test-dist`
// runs them with PORTHOLE_DIST (the dist directory) and PORTHOLE_VERSION set.

func distDir(t *testing.T) (dir, version string) {
	t.Helper()
	dir, version = os.Getenv("PORTHOLE_DIST"), os.Getenv("PORTHOLE_VERSION")
	if dir == "" || version == "" {
		t.Skip("SKIPPED: PORTHOLE_DIST and PORTHOLE_VERSION not set (make test-dist sets them)")
	}
	return dir, version
}

var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "armv7": elf.EM_ARM}

// checkBinary checks a release binary: the target's machine, static (no
// interpreter, no dynamic section), and when the machine can run it, its
// -version prints the release's version.
func checkBinary(t *testing.T, path, prog, version string, tg Target) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	defer f.Close()
	if f.Machine != elfMachine[tg.Name] {
		t.Errorf("%s: machine %v, want %v", path, f.Machine, elfMachine[tg.Name])
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s: not static (has %v)", path, p.Type)
		}
	}
	if tg.GOARCH != runtime.GOARCH {
		return
	}
	out, err := exec.Command(path, "-version").CombinedOutput()
	if got := strings.TrimSpace(string(out)); err != nil || got != prog+" "+version {
		t.Errorf("%s -version: %q (%v), want %q", path, got, err, prog+" "+version)
	}
}

func TestArtifactArchives(t *testing.T) {
	dir, version := distDir(t)
	for _, tg := range Targets {
		data := checkArchive(t, filepath.Join(dir, ArchiveName(version, tg)), version)
		top := strings.TrimSuffix(ArchiveName(version, tg), ".tar.gz") + "/"
		bin := t.TempDir()
		for _, p := range Programs {
			path := filepath.Join(bin, p.Name)
			if err := os.WriteFile(path, data[top+p.Name], 0o755); err != nil {
				t.Fatal(err)
			}
			checkBinary(t, path, p.Name, version, tg)
		}
	}
	n := 0
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if IsArtifact(e.Name()) {
			n++
		}
	}
	checkSums(t, dir, n)
}

func TestArtifactImages(t *testing.T) {
	dir, version := distDir(t)
	for _, tg := range Targets {
		for _, p := range Programs {
			file := filepath.Join(dir, ImageName(p.Name, version, tg))
			fi, err := os.Stat(file)
			if err != nil {
				t.Error(err)
				continue
			}
			// A static binary and a few small files: no base image.
			if fi.Size() > 25<<20 {
				t.Errorf("%s: %d MiB, want under 25", file, fi.Size()>>20)
			}
			t.Logf("%s: %.1f MiB", filepath.Base(file), float64(fi.Size())/(1<<20))
			_, layer := checkImage(t, file, p.Name, version)
			if len(layer["etc/ssl/certs/ca-certificates.crt"]) == 0 {
				if _, err := os.Stat(CACertsFile); err == nil {
					t.Errorf("%s: no CA certificates though the build machine has %s", file, CACertsFile)
				}
			}
			bin := filepath.Join(t.TempDir(), p.Name)
			if err := os.WriteFile(bin, layer["usr/bin/"+p.Name], 0o755); err != nil {
				t.Fatal(err)
			}
			checkBinary(t, bin, p.Name, version, tg)
		}
	}
}

// TestArtifactDebInstall installs the host's package with dpkg, runs both
// programs, checks the skeleton configs (they fail -check only for want of
// the secret files, and pass once those exist), then removes (config and
// state stay) and purges it (nothing stays). It changes this machine: it
// runs only as root with PORTHOLE_DEB=1 (or =require, as .ci/run sets, which
// also turns a skip into a failure), and never over an existing porthole.
func TestArtifactDebInstall(t *testing.T) {
	dir, version := distDir(t)
	mode := os.Getenv("PORTHOLE_DEB")
	skip := func(why string) {
		if mode == "require" {
			t.Fatalf("PORTHOLE_DEB=require but: %s", why)
		}
		t.Skip("DEB INSTALL SKIPPED: " + why)
	}
	if mode == "" {
		skip("set PORTHOLE_DEB=1 to dpkg -i the package on this machine (root)")
	}
	if os.Geteuid() != 0 {
		skip("not root")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		skip("no dpkg")
	}
	var tg Target
	for _, x := range Targets {
		if x.GOARCH == runtime.GOARCH && x.GOARM == "" {
			tg = x
		}
	}
	if tg.Name == "" {
		skip("no package for " + runtime.GOARCH)
	}
	if out, err := exec.Command("dpkg-query", "-W", "porthole").CombinedOutput(); err == nil {
		t.Fatalf("a porthole package is installed already (%s): not touching it", strings.TrimSpace(string(out)))
	}
	for _, p := range []string{"/etc/porthole", "/var/lib/porthole-agent", "/var/lib/porthole-relay"} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s exists: not installing over it", p)
		}
	}
	run := func(name string, args ...string) (string, error) {
		out, err := exec.Command(name, args...).CombinedOutput()
		return string(out), err
	}
	must := func(name string, args ...string) string {
		t.Helper()
		out, err := run(name, args...)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return out
	}
	deb := filepath.Join(dir, DebName(version, tg))
	t.Cleanup(func() {
		if out, err := run("dpkg", "--purge", "porthole"); err != nil {
			t.Errorf("cleanup: dpkg --purge porthole: %v\n%s", err, out)
		}
	})
	must("dpkg", "-i", deb)

	for _, p := range Programs {
		if out := must("/usr/bin/"+p.Name, "-version"); strings.TrimSpace(out) != p.Name+" "+version {
			t.Errorf("%s -version: %q", p.Name, out)
		}
		unit := "/usr/lib/systemd/system/" + p.Name + ".service"
		if _, err := os.Stat(unit); err != nil {
			t.Error(err)
		}
		if sa, err := exec.LookPath("systemd-analyze"); err == nil {
			if out, err := run(sa, "verify", unit); err != nil || strings.TrimSpace(out) != "" {
				t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
			}
		}
		state := "/var/lib/" + p.Name
		if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v", state, fi, err)
		}
	}
	if u, err := user.Lookup(ServiceUser); err != nil || u.Uid == "0" {
		t.Fatalf("service user %s: %v %v", ServiceUser, u, err)
	}

	// The skeleton as shipped: -check fails, and only because secret files
	// don't exist yet; each error line names the key and the file to create.
	secrets := map[string]string{}
	for _, p := range Programs {
		conf := "/etc/porthole/" + strings.TrimPrefix(p.Name, "porthole-") + ".yaml"
		out, err := run("/usr/bin/"+p.Name, "-check", "-config", conf)
		if err == nil {
			t.Errorf("%s -check passed without any secret file: %s", p.Name, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			_, after, ok := strings.Cut(line, ": cannot read ")
			file, _, ok2 := strings.Cut(after, ": no such file")
			if !ok || !ok2 || !strings.Contains(line, "_file: ") || !strings.HasPrefix(file, "/etc/porthole/") {
				t.Errorf("%s -check on the skeleton: %q is not a missing secret file", p.Name, line)
				continue
			}
			secrets[file] = p.Name
		}
	}
	if len(secrets) == 0 {
		t.Fatal("no secret file named by -check")
	}
	// Fill them in as the README says: a token from porthole-relay token,
	// 0600 root.
	tokenOut, err := exec.Command("/usr/bin/porthole-relay", "token").Output()
	if err != nil {
		t.Fatalf("porthole-relay token: %v", err)
	}
	token := strings.TrimSpace(string(tokenOut))
	for file := range secrets {
		v := token
		if !strings.HasSuffix(file, "home.token") {
			v = "dns-provider-secret"
		}
		if err := os.WriteFile(file, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range Programs {
		conf := "/etc/porthole/" + strings.TrimPrefix(p.Name, "porthole-") + ".yaml"
		if out, err := run("/usr/bin/"+p.Name, "-check", "-config", conf); err != nil {
			t.Errorf("%s -check with the secrets in place: %v\n%s", p.Name, err, out)
		}
	}

	// remove: programs and units go, configs, secrets and state stay.
	must("dpkg", "-r", "porthole")
	for _, p := range Programs {
		for _, gone := range []string{"/usr/bin/" + p.Name, "/usr/lib/systemd/system/" + p.Name + ".service"} {
			if _, err := os.Stat(gone); err == nil {
				t.Errorf("dpkg -r left %s", gone)
			}
		}
	}
	for _, kept := range []string{"/etc/porthole/agent.yaml", "/etc/porthole/relay.yaml", "/var/lib/porthole-relay"} {
		if _, err := os.Stat(kept); err != nil {
			t.Errorf("dpkg -r removed %s", kept)
		}
	}
	for file := range secrets {
		if _, err := os.Stat(file); err != nil {
			t.Errorf("dpkg -r removed the secret %s", file)
		}
	}

	// purge: nothing of it stays.
	must("dpkg", "--purge", "porthole")
	for _, gone := range []string{"/etc/porthole", "/var/lib/porthole-agent", "/var/lib/porthole-relay", "/usr/lib/sysctl.d/90-porthole.conf"} {
		if _, err := os.Stat(gone); err == nil {
			t.Errorf("dpkg --purge left %s", gone)
		}
	}
	if _, err := user.Lookup(ServiceUser); err == nil {
		t.Errorf("dpkg --purge left the user %s", ServiceUser)
	}
}
