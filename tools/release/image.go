package release

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ImageUID is the non-root user (and group) the images run as: distroless's
// "nonroot".
const ImageUID = 65532

// CACertsFile is where the images' CA certificates come from, when the build
// machine has the file (Debian's ca-certificates); Go's crypto/x509 reads the
// same path in the container.
var CACertsFile = "/etc/ssl/certs/ca-certificates.crt"

// ImageName is the OCI archive's file name of prog for version and t.
func ImageName(prog, version string, t Target) string {
	return fmt.Sprintf("%s_%s_linux_%s.oci.tar", prog, version, t.Name)
}

// imageSpec is what differs between the programs' images.
type imageSpec struct {
	ports []string // exposed, "7443/udp"
	env   []string
}

var imageSpecs = map[string]imageSpec{
	"porthole-relay": {ports: []string{"7443/tcp", "7443/udp"}},
	"porthole-agent": {},
}

// ImageLayer lists the files of prog's single image layer: the static binary
// in /usr/bin, /etc/passwd and /etc/group with the non-root user, the CA
// certificates (when caCerts is not empty), /etc/porthole for the mounted
// config, the state directory (owned by the user, so a named volume mounted
// there is writable), and /tmp.
func ImageLayer(prog, binary string, caCerts []byte) []Entry {
	state := "var/lib/" + prog + "/"
	ents := []Entry{
		Dir("etc", 0o755, 0, 0),
		{Name: "etc/passwd", Mode: 0o644, Data: fmt.Appendf(nil,
			"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/%s:/sbin/nologin\n", ImageUID, ImageUID, state)},
		{Name: "etc/group", Mode: 0o644, Data: fmt.Appendf(nil, "root:x:0:\nnonroot:x:%d:\n", ImageUID)},
		Dir("etc/porthole", 0o755, 0, 0),
		Dir(state, 0o700, ImageUID, ImageUID),
		Dir("tmp", 0o777|fs.ModeSticky, 0, 0),
		{Name: "usr/bin/" + prog, Mode: 0o755, Source: binary},
	}
	if len(caCerts) > 0 {
		ents = append(ents, Entry{Name: "etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Data: caCerts})
	}
	return ents
}

// BuildImage assembles prog's image for t from its binary (no base image, one
// layer: ImageLayer), running as ImageUID with the binary as entrypoint and
// "-config /etc/porthole/<agent|relay>.yaml" as default arguments.
func BuildImage(prog, binary, version string, t Target, c Config, caCerts []byte) (v1.Image, error) {
	spec, ok := imageSpecs[prog]
	if !ok {
		return nil, fmt.Errorf("release: no image for %s", prog)
	}
	var tarBuf bytes.Buffer
	if err := WriteTar(&tarBuf, ImageLayer(prog, binary, caCerts), c.MTime); err != nil {
		return nil, err
	}
	raw := tarBuf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("release: image layer: %w", err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = "linux", t.OCIArch, t.OCIVariant
	cf.Created = v1.Time{Time: c.MTime.UTC()}
	conf := strings.TrimPrefix(prog, "porthole-")
	exposed := map[string]struct{}{}
	for _, p := range spec.ports {
		exposed[p] = struct{}{}
	}
	cf.Config = v1.Config{
		User:         fmt.Sprintf("%d:%d", ImageUID, ImageUID),
		Entrypoint:   []string{"/usr/bin/" + prog},
		Cmd:          []string{"-config", "/etc/porthole/" + conf + ".yaml"},
		Env:          append([]string{"PATH=/usr/bin"}, spec.env...),
		WorkingDir:   "/",
		ExposedPorts: exposed,
		Volumes:      map[string]struct{}{"/var/lib/" + prog: {}},
		Labels: map[string]string{
			"org.opencontainers.image.title":       prog,
			"org.opencontainers.image.version":     version,
			"org.opencontainers.image.source":      "https://github.com/porthole-dev/porthole",
			"org.opencontainers.image.description": "Porthole " + conf + ": remote access to home IP cameras",
		},
	}
	return mutate.ConfigFile(img, cf)
}

// Images writes an OCI archive (ImageName) of each program for every target
// into c.Out, then rewrites SHA256SUMS. Each archive is an OCI image layout
// (index.json, blobs/) tagged "<prog>:<version>" and "<prog>:latest", plus
// the manifest.json of `docker save`, so `docker load`, `podman load` and
// `skopeo copy oci-archive:...` all take it.
func Images(ctx context.Context, c Config) ([]string, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(CACertsFile)
	if err != nil {
		c.Logger.Warn("images without CA certificates (HTTPS public-IP sources and ACME fail in them)", "err", err)
		ca = nil
	}
	var written []string
	for _, t := range c.Targets {
		bins, err := c.binaries(ctx, t)
		if err != nil {
			return written, err
		}
		for _, p := range Programs {
			img, err := BuildImage(p.Name, filepath.Join(bins, p.Name), c.Version, t, c, ca)
			if err != nil {
				return written, err
			}
			dst := filepath.Join(c.Out, ImageName(p.Name, c.Version, t))
			tags := []string{p.Name + ":" + c.Version, p.Name + ":latest"}
			if err := writeFileAtomic(dst, func(w io.Writer) error { return WriteOCIArchive(w, img, tags, c) }); err != nil {
				return written, err
			}
			c.Logger.Info("wrote", "file", dst)
			written = append(written, dst)
		}
	}
	return written, WriteSums(c.Out)
}

// WriteOCIArchive writes img as a tar of an OCI image layout with one index
// entry per tag ("name:tag"), and a docker-save manifest.json beside it.
func WriteOCIArchive(w io.Writer, img v1.Image, tags []string, c Config) error {
	dir, err := os.MkdirTemp("", "porthole-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	for _, tag := range tags {
		_, ref, _ := strings.Cut(tag, ":")
		if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": ref,
			"io.containerd.image.name":          tag,
		})); err != nil {
			return fmt.Errorf("release: oci layout: %w", err)
		}
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	dm := []map[string]any{{"Config": "blobs/sha256/" + cfgName.Hex, "RepoTags": tags, "Layers": []string{}}}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		dm[0]["Layers"] = append(dm[0]["Layers"].([]string), "blobs/sha256/"+d.Hex)
	}
	mj, err := json.Marshal(dm)
	if err != nil {
		return err
	}
	ents, err := TreeEntries(dir, ".", "")
	if err != nil {
		return err
	}
	var out []Entry
	for _, e := range ents {
		if e.Name != "./" {
			e.Name = strings.TrimPrefix(e.Name, "./")
			e.Mode = e.Mode &^ 0o111
			if e.IsDir() {
				e.Mode = 0o755
			}
			out = append(out, e)
		}
	}
	out = append(out, Entry{Name: "manifest.json", Mode: 0o644, Data: mj})
	return WriteTar(w, out, c.MTime)
}
