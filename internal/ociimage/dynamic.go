package ociimage

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// arch describes what a platform's dynamically linked binaries look like.
type arch struct {
	machine elf.Machine
	// triplet is Debian's multiarch directory name: glibc's loader, as
	// Debian builds it, searches /lib/<triplet> without an ld.so.cache.
	triplet string
}

var arches = map[string]arch{
	"amd64": {machine: elf.EM_X86_64, triplet: "x86_64-linux-gnu"},
	"arm64": {machine: elf.EM_AARCH64, triplet: "aarch64-linux-gnu"},
}

// AddBinary adds the executable at src (on the build machine) to the image
// at dst, mode 0755, after checking that it is an ELF executable for goarch.
// When it is dynamically linked, its program interpreter and the shared
// libraries it needs, and the ones they need, are copied from sysroot (see
// AddLibraries). A static binary needs no sysroot.
func (r *Rootfs) AddBinary(dst, src, goarch, sysroot string) error {
	a, ok := arches[goarch]
	if !ok {
		return fmt.Errorf("architecture %q is not supported (want one of amd64, arm64)", goarch)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	interp, needed, err := dynamic(data, a)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	r.AddFile(dst, 0o755, data)
	if interp == "" && len(needed) == 0 {
		return nil
	}
	if sysroot == "" {
		return fmt.Errorf("%s is dynamically linked (needs %s): give a sysroot for linux/%s to copy them from", src, strings.Join(needed, ", "), goarch)
	}
	if interp != "" {
		lib, err := find(sysroot, a, path.Base(interp))
		if err != nil {
			return fmt.Errorf("%s: program interpreter: %w", src, err)
		}
		if err := r.addLibrary(interp, lib, a); err != nil {
			return err
		}
	}
	return r.AddLibraries(goarch, sysroot, needed...)
}

// AddLibraries copies the named shared libraries (sonames such as
// libc.so.6), and the ones they need, from sysroot into /lib/<triplet>. A
// sysroot is a directory laid out as a Debian root: / for the build
// machine's own architecture, /usr/<triplet> for a cross package. Libraries
// already in the image are skipped.
func (r *Rootfs) AddLibraries(goarch, sysroot string, sonames ...string) error {
	a, ok := arches[goarch]
	if !ok {
		return fmt.Errorf("architecture %q is not supported (want one of amd64, arm64)", goarch)
	}
	queue := append([]string(nil), sonames...)
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		dst := path.Join("/lib", a.triplet, name)
		if r.Has(dst) {
			continue
		}
		src, err := find(sysroot, a, name)
		if err != nil {
			return err
		}
		if err := r.addLibrary(dst, src, a); err != nil {
			return err
		}
		data := r.entries[clean(dst)].data
		_, needed, err := dynamic(data, a)
		if err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		queue = append(queue, needed...)
	}
	return nil
}

// addLibrary copies the file src resolves to (a soname is usually a symlink
// to the versioned file) into the image at dst.
func (r *Rootfs) addLibrary(dst, src string, a arch) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if _, _, err := dynamic(data, a); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	r.AddFile(dst, 0o755, data)
	return nil
}

// find looks for a shared library by file name in the directories of
// sysroot where Debian puts them.
func find(sysroot string, a arch, name string) (string, error) {
	dirs := []string{
		filepath.Join("lib", a.triplet), filepath.Join("usr", "lib", a.triplet),
		"lib", filepath.Join("usr", "lib"), "lib64",
	}
	for _, d := range dirs {
		p := filepath.Join(sysroot, d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("%s not found in sysroot %s (looked in %s)", name, sysroot, strings.Join(dirs, ", "))
}

// dynamic returns the program interpreter and the needed libraries of an
// ELF file, after checking its machine.
func dynamic(data []byte, a arch) (interp string, needed []string, err error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return "", nil, fmt.Errorf("not an ELF file: %w", err)
	}
	defer f.Close()
	if f.Machine != a.machine {
		return "", nil, fmt.Errorf("built for %s, not %s", f.Machine, a.machine)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return "", nil, fmt.Errorf("reading the program interpreter: %w", err)
		}
		interp = string(bytes.TrimRight(b, "\x00"))
	}
	needed, err = f.ImportedLibraries()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return "", nil, fmt.Errorf("reading needed libraries: %w", err)
	}
	return interp, needed, nil
}
