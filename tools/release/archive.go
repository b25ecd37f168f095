package release

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Entry is one file or directory of an archive or image layer.
type Entry struct {
	Name     string      // slash-separated, relative; directories end in "/"
	Mode     fs.FileMode // permission bits (and fs.ModeSticky)
	UID, GID int
	Data     []byte // file contents; nil for a directory
	Source   string // or: read the contents from this file when written
}

// IsDir says whether e is a directory.
func (e Entry) IsDir() bool { return strings.HasSuffix(e.Name, "/") }

// Dir is a directory entry.
func Dir(name string, mode fs.FileMode, uid, gid int) Entry {
	return Entry{Name: strings.TrimSuffix(name, "/") + "/", Mode: mode, UID: uid, GID: gid}
}

// WriteTar writes entries as a tar stream, sorted by name, with every time
// set to mtime and no user or host names: the same inputs give the same bytes.
// Parent directories that are not listed are added (0755, root).
func WriteTar(w io.Writer, entries []Entry, mtime time.Time) error {
	all := map[string]Entry{}
	for _, e := range entries {
		if _, dup := all[e.Name]; dup {
			return fmt.Errorf("archive: %s listed twice", e.Name)
		}
		all[e.Name] = e
	}
	for _, e := range entries {
		for d := path.Dir(strings.TrimSuffix(e.Name, "/")); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := all[d+"/"]; !ok {
				all[d+"/"] = Dir(d, 0o755, 0, 0)
			}
		}
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	for _, n := range names {
		e := all[n]
		h := &tar.Header{Name: e.Name, Mode: int64(e.Mode.Perm()), Uid: e.UID, Gid: e.GID,
			ModTime: mtime, Format: tar.FormatPAX}
		if e.Mode&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		data := e.Data
		if e.IsDir() {
			h.Typeflag = tar.TypeDir
		} else {
			if e.Source != "" {
				var err error
				if data, err = os.ReadFile(e.Source); err != nil {
					return fmt.Errorf("archive: %w", err)
				}
			}
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("archive: %s: %w", e.Name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("archive: %s: %w", e.Name, err)
		}
	}
	return tw.Close()
}

// WriteTarGz is WriteTar through gzip (best compression, no name or time in
// the gzip header).
func WriteTarGz(w io.Writer, entries []Entry, mtime time.Time) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	if err := WriteTar(zw, entries, mtime); err != nil {
		return err
	}
	return zw.Close()
}

// TreeEntries lists the files under root/dir (recursively, regular files
// only, modes kept) as entries named prefix + their path below root.
func TreeEntries(root, dir, prefix string) ([]Entry, error) {
	var out []Entry
	err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		name := prefix + filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			out = append(out, Dir(name, 0o755, 0, 0))
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			mode := fs.FileMode(0o644)
			if info.Mode()&0o111 != 0 {
				mode = 0o755
			}
			out = append(out, Entry{Name: name, Mode: mode, Source: p})
		}
		return nil
	})
	return out, err
}

// writeFileAtomic writes a file through a temporary one in the same directory.
func writeFileAtomic(name string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}
