package ociimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"
)

// entry is one file system object of a Rootfs.
type entry struct {
	mode fs.FileMode
	data []byte
	link string // symlink target
}

// Rootfs is the file system of an image, built in memory. Paths are
// absolute and clean; parent directories are added as 0755 when a file is.
type Rootfs struct {
	entries map[string]entry
}

// NewRootfs returns an empty file system with the directories and files
// every Tessera image has: /etc/passwd and /etc/group naming root and the
// unprivileged user 65532 ("nonroot", as distroless names it), so that
// processes running as 65532 have a name and a home, and a world-writable
// /tmp.
func NewRootfs() *Rootfs {
	r := &Rootfs{entries: map[string]entry{}}
	r.AddDir("/tmp", fs.ModeDir|fs.ModeSticky|0o777)
	r.AddDir("/home/nonroot", fs.ModeDir|0o700)
	r.AddFile("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"))
	r.AddFile("/etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\n"))
	return r
}

// AddDir adds a directory with the given mode (fs.ModeDir is implied).
func (r *Rootfs) AddDir(p string, mode fs.FileMode) {
	p = clean(p)
	r.parents(p)
	r.entries[p] = entry{mode: mode | fs.ModeDir}
}

// AddFile adds a regular file, replacing what was at p.
func (r *Rootfs) AddFile(p string, mode fs.FileMode, data []byte) {
	p = clean(p)
	r.parents(p)
	r.entries[p] = entry{mode: mode.Perm(), data: data}
}

// AddSymlink adds a symbolic link at p pointing to target.
func (r *Rootfs) AddSymlink(p, target string) {
	p = clean(p)
	r.parents(p)
	r.entries[p] = entry{mode: fs.ModeSymlink | 0o777, link: target}
}

// Has reports whether p is in the file system.
func (r *Rootfs) Has(p string) bool {
	_, ok := r.entries[clean(p)]
	return ok
}

func (r *Rootfs) parents(p string) {
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		if _, ok := r.entries[d]; ok {
			// A directory added explicitly keeps its mode.
			continue
		}
		r.entries[d] = entry{mode: fs.ModeDir | 0o755}
	}
}

func clean(p string) string {
	return path.Clean("/" + p)
}

// tar writes the file system as an uncompressed layer: entries sorted by
// path (so a directory precedes what it holds), owned by root, every time
// set to mtime, no user or group names, PAX format. Nothing of the machine
// that built it enters the bytes.
func (r *Rootfs) tar(mtime time.Time) ([]byte, error) {
	paths := make([]string, 0, len(r.entries))
	for p := range r.entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		e := r.entries[p]
		h := &tar.Header{
			Name:    strings.TrimPrefix(p, "/"),
			Mode:    int64(e.mode.Perm()),
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if e.mode&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		switch {
		case e.mode.IsDir():
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		case e.mode&fs.ModeSymlink != 0:
			h.Typeflag = tar.TypeSymlink
			h.Linkname = e.link
		default:
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", p, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				return nil, fmt.Errorf("layer entry %s: %w", p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
