package release

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

// DebName is the Debian package's file name for version and t.
func DebName(version string, t Target) string {
	return fmt.Sprintf("porthole_%s_%s.deb", version, t.DebArch)
}

// DebVersion turns a version as `git describe` prints it into one dpkg
// accepts and orders sensibly: no leading "v", "-" (which would start the
// Debian revision) as "+", and a leading digit (0~git<hash> for a bare hash).
func DebVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	v = strings.ReplaceAll(v, "-", "+")
	if v == "" || v[0] < '0' || v[0] > '9' {
		v = "0~git" + v
	}
	return v
}

// ServiceUser is the system user the packaged units run as (created by the
// package's postinst).
const ServiceUser = "porthole"

// PackageUnit adapts a unit of deploy/systemd to the package: the binary in
// /usr/bin instead of /usr/local/bin, the package's static ServiceUser instead
// of a DynamicUser (its state directory then survives `dpkg -r` and goes with
// --purge), and the hand-install notes replaced by the package's. It fails
// when the unit no longer has what it replaces.
func PackageUnit(unit []byte, prog string) ([]byte, error) {
	s := string(unit)
	i := strings.Index(s, "\n[Unit]\n")
	if i < 0 {
		return nil, fmt.Errorf("%s.service: no [Unit] section", prog)
	}
	s = s[i+1:]
	bin := "/usr/local/bin/" + prog + " "
	if strings.Count(s, bin) < 2 {
		return nil, fmt.Errorf("%s.service: want ExecStartPre= and ExecStart= running %s", prog, strings.TrimSpace(bin))
	}
	s = strings.ReplaceAll(s, bin, "/usr/bin/"+prog+" ")
	if !strings.Contains(s, "\nDynamicUser=yes\n") {
		return nil, fmt.Errorf("%s.service: no DynamicUser=yes line to replace with User=%s", prog, ServiceUser)
	}
	s = strings.Replace(s, "\nDynamicUser=yes\n", "\nUser="+ServiceUser+"\nGroup="+ServiceUser+"\n", 1)
	conf := strings.TrimPrefix(prog, "porthole-")
	head := fmt.Sprintf(`# %[1]s, installed by the porthole Debian package.
#
# Configure /etc/porthole/%[2]s.yaml (check it: %[1]s -check -config
# /etc/porthole/%[2]s.yaml), then: systemctl enable --now %[1]s
# Secrets live in files of their own in /etc/porthole (0600 root), which
# systemd hands to the service (user %[3]s): each one the config names needs
# its LoadCredential= line below. Change this unit
# with "systemctl edit %[1]s" (a drop-in survives upgrades), e.g.
#   [Service]
#   LoadCredential=frontdoor.pass:/etc/porthole/frontdoor.pass
`, prog, conf, ServiceUser)
	return []byte(head + s), nil
}

// Deb writes the Debian package of every target (DebName) into c.Out with
// nfpm, then rewrites SHA256SUMS. Contents: the programs in /usr/bin, their
// units (PackageUnit) in /usr/lib/systemd/system, deploy/examples as the
// config skeleton in /etc/porthole (conffiles), the sysctl settings, README;
// deploy/debian's maintainer scripts create the service user and state
// directories and remove them on purge.
func Deb(ctx context.Context, c Config) ([]string, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	scripts := map[string]string{}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		p := filepath.Join(c.Root, "deploy", "debian", s)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("release: %w", err)
		}
		scripts[s] = p
	}
	tmp, err := os.MkdirTemp("", "porthole-deb-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	var units files.Contents
	for _, p := range Programs {
		src, err := os.ReadFile(filepath.Join(c.Root, "deploy", "systemd", p.Name+".service"))
		if err != nil {
			return nil, fmt.Errorf("release: %w", err)
		}
		u, err := PackageUnit(src, p.Name)
		if err != nil {
			return nil, fmt.Errorf("release: %w", err)
		}
		f := filepath.Join(tmp, p.Name+".service")
		if err := os.WriteFile(f, u, 0o644); err != nil {
			return nil, err
		}
		units = append(units, &files.Content{Source: f, Destination: "/usr/lib/systemd/system/" + p.Name + ".service",
			FileInfo: &files.ContentFileInfo{Mode: 0o644, MTime: c.MTime}})
	}
	var written []string
	for _, t := range c.Targets {
		bins, err := c.binaries(ctx, t)
		if err != nil {
			return written, err
		}
		contents := append(files.Contents{}, units...)
		add := func(src, dst, typ string, mode os.FileMode) {
			contents = append(contents, &files.Content{Source: src, Destination: dst, Type: typ,
				FileInfo: &files.ContentFileInfo{Mode: mode, MTime: c.MTime}})
		}
		for _, p := range Programs {
			add(filepath.Join(bins, p.Name), "/usr/bin/"+p.Name, "", 0o755)
		}
		contents = append(contents, &files.Content{Destination: "/etc/porthole", Type: files.TypeDir,
			FileInfo: &files.ContentFileInfo{Mode: 0o755, MTime: c.MTime}})
		for _, conf := range []string{"agent.yaml", "relay.yaml"} {
			add(filepath.Join(c.Root, "deploy", "examples", conf), "/etc/porthole/"+conf, files.TypeConfigNoReplace, 0o644)
		}
		add(filepath.Join(c.Root, "deploy", "sysctl", "90-porthole.conf"), "/usr/lib/sysctl.d/90-porthole.conf", "", 0o644)
		add(filepath.Join(c.Root, "README.md"), "/usr/share/doc/porthole/README.md", "", 0o644)
		info := &nfpm.Info{
			Name:          "porthole",
			Arch:          t.DebArch,
			Platform:      "linux",
			Version:       DebVersion(c.Version),
			VersionSchema: "none",
			Section:       "net",
			Priority:      "optional",
			Maintainer:    "Porthole developers <porthole@example.com>",
			Homepage:      "https://github.com/porthole-dev/porthole",
			Description: "remote access to home IP cameras through a blind relay\n" +
				"porthole-agent runs on the home LAN (DDNS, router port mapping, a tunnel\n" +
				"to the relay, HTTPS/RTSPS gateway with viewer logins); porthole-relay runs\n" +
				"on a VPS and forwards viewers' connections without seeing the video.",
			MTime: c.MTime,
			Overridables: nfpm.Overridables{
				Depends:    []string{"adduser"},
				Recommends: []string{"systemd"},
				Contents:   contents,
				Scripts:    nfpm.Scripts{PostInstall: scripts["postinst"], PreRemove: scripts["prerm"], PostRemove: scripts["postrm"]},
				Deb:        nfpm.Deb{Compression: "gzip"},
			},
		}
		if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
			return written, fmt.Errorf("release: deb %s: %w", t.Name, err)
		}
		var buf bytes.Buffer
		if err := deb.Default.Package(info, &buf); err != nil {
			return written, fmt.Errorf("release: deb %s: %w", t.Name, err)
		}
		dst := filepath.Join(c.Out, DebName(c.Version, t))
		if err := writeFileAtomic(dst, func(w io.Writer) error { _, err := w.Write(buf.Bytes()); return err }); err != nil {
			return written, err
		}
		c.Logger.Info("wrote", "file", dst)
		written = append(written, dst)
	}
	return written, WriteSums(c.Out)
}
