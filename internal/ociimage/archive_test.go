package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var epoch = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func testArchive(created time.Time) *Archive {
	var images []Image
	for _, arch := range []string{"arm64", "amd64"} {
		root := NewRootfs()
		root.AddFile("/usr/local/bin/app", 0o755, []byte("binary for "+arch))
		root.AddSymlink("/usr/bin/app", "/usr/local/bin/app")
		images = append(images, Image{Arch: arch, Rootfs: root, Config: ocispec.ImageConfig{
			User:       "65532:65532",
			Entrypoint: []string{"/usr/local/bin/app"},
			Labels:     map[string]string{ocispec.AnnotationVersion: "v1.2.3"},
		}})
	}
	return &Archive{
		Name:        "registry.example:5000/team/app:v1.2.3",
		Created:     created,
		Annotations: map[string]string{ocispec.AnnotationVersion: "v1.2.3"},
		Images:      images,
	}
}

func write(t *testing.T, a *Archive) ([]byte, digest.Digest) {
	t.Helper()
	var buf bytes.Buffer
	d, err := a.Write(&buf)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	return buf.Bytes(), d
}

func TestArchiveIsReproducible(t *testing.T) {
	first, d1 := write(t, testArchive(epoch))
	second, d2 := write(t, testArchive(epoch))
	if !bytes.Equal(first, second) || d1 != d2 {
		t.Fatalf("two builds of the same inputs differ: %s and %s", d1, d2)
	}
	_, d3 := write(t, testArchive(epoch.Add(time.Second)))
	if d3 == d1 {
		t.Fatalf("a different build time gave the same index digest %s", d1)
	}
}

// layout is an OCI layout read back from a tarball, every blob checked
// against its digest.
type layout struct {
	files map[string][]byte
}

func readLayout(t *testing.T, data []byte) *layout {
	t.Helper()
	l := &layout{files: map[string][]byte{}}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading the archive: %v", err)
		}
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s has time %v, want %v", h.Name, h.ModTime, epoch)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		l.files[h.Name] = b
		if name, ok := strings.CutPrefix(h.Name, "blobs/sha256/"); ok && name != "" {
			if got := digest.FromBytes(b).Encoded(); got != name {
				t.Errorf("blob %s has digest %s", name, got)
			}
		}
	}
	return l
}

func (l *layout) blob(t *testing.T, d ocispec.Descriptor, v any) []byte {
	t.Helper()
	b, ok := l.files["blobs/sha256/"+d.Digest.Encoded()]
	if !ok {
		t.Fatalf("blob %s is missing", d.Digest)
	}
	if int64(len(b)) != d.Size {
		t.Fatalf("blob %s has %d bytes, the descriptor says %d", d.Digest, len(b), d.Size)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("blob %s: %v", d.Digest, err)
		}
	}
	return b
}

func TestArchiveLayout(t *testing.T) {
	data, indexDigest := write(t, testArchive(epoch))
	l := readLayout(t, data)

	var lay ocispec.ImageLayout
	if err := json.Unmarshal(l.files[ocispec.ImageLayoutFile], &lay); err != nil || lay.Version != ocispec.ImageLayoutVersion {
		t.Fatalf("oci-layout = %q (%v)", l.files[ocispec.ImageLayoutFile], err)
	}
	var top ocispec.Index
	if err := json.Unmarshal(l.files["index.json"], &top); err != nil {
		t.Fatal(err)
	}
	if len(top.Manifests) != 1 {
		t.Fatalf("index.json has %d entries, want the one image index", len(top.Manifests))
	}
	wantNames := map[string]string{
		"io.containerd.image.name": "registry.example:5000/team/app:v1.2.3",
		ocispec.AnnotationRefName:  "v1.2.3",
	}
	if diff := cmp.Diff(wantNames, top.Manifests[0].Annotations); diff != "" {
		t.Errorf("names (-want +got):\n%s", diff)
	}
	if top.Manifests[0].Digest != indexDigest || top.Manifests[0].MediaType != ocispec.MediaTypeImageIndex {
		t.Errorf("index.json points at %v, Write returned %s", top.Manifests[0], indexDigest)
	}

	var index ocispec.Index
	l.blob(t, top.Manifests[0], &index)
	if got := index.Annotations[ocispec.AnnotationVersion]; got != "v1.2.3" {
		t.Errorf("index version annotation = %q", got)
	}
	var platforms []string
	for _, md := range index.Manifests {
		platforms = append(platforms, md.Platform.OS+"/"+md.Platform.Architecture+md.Platform.Variant)
		var m ocispec.Manifest
		l.blob(t, md, &m)
		var config ocispec.Image
		l.blob(t, m.Config, &config)
		if config.Architecture != md.Platform.Architecture || config.OS != "linux" {
			t.Errorf("config of %s says %s/%s", md.Platform.Architecture, config.OS, config.Architecture)
		}
		if config.Config.User != "65532:65532" || config.Config.Entrypoint[0] != "/usr/local/bin/app" {
			t.Errorf("config %+v", config.Config)
		}
		if len(m.Layers) != 1 || len(config.RootFS.DiffIDs) != 1 {
			t.Fatalf("want one layer, manifest has %d, config %d", len(m.Layers), len(config.RootFS.DiffIDs))
		}
		zr, err := gzip.NewReader(bytes.NewReader(l.blob(t, m.Layers[0], nil)))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if got := digest.FromBytes(raw); got != config.RootFS.DiffIDs[0] {
			t.Errorf("diff_id %s, the layer's is %s", config.RootFS.DiffIDs[0], got)
		}
		got := listLayer(t, raw)
		want := []string{
			"etc/ drwxr-xr-x", "etc/group -rw-r--r--", "etc/passwd -rw-r--r--",
			"home/ drwxr-xr-x", "home/nonroot/ drwx------",
			"tmp/ dtrwxrwxrwx",
			"usr/ drwxr-xr-x", "usr/bin/ drwxr-xr-x", "usr/bin/app Lrwxrwxrwx -> /usr/local/bin/app",
			"usr/local/ drwxr-xr-x", "usr/local/bin/ drwxr-xr-x", "usr/local/bin/app -rwxr-xr-x binary for " + md.Platform.Architecture,
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("layer of %s (-want +got):\n%s", md.Platform.Architecture, diff)
		}
	}
	if diff := cmp.Diff([]string{"linux/amd64", "linux/arm64v8"}, platforms); diff != "" {
		t.Errorf("platforms (-want +got):\n%s", diff)
	}
}

// listLayer describes each entry of a layer as "name mode [-> link | content]",
// checking ownership and times on the way.
func listLayer(t *testing.T, raw []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(epoch) {
			t.Errorf("%s: owner %d:%d (%q:%q), time %v", h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime)
		}
		s := h.Name + " " + h.FileInfo().Mode().String()
		switch h.Typeflag {
		case tar.TypeSymlink:
			s += " -> " + h.Linkname
		case tar.TypeReg:
			b, _ := io.ReadAll(tr)
			if h.Name == "usr/local/bin/app" {
				s += " " + string(b)
			}
		}
		out = append(out, s)
	}
}

func TestArchiveRefusesBadInput(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(*Archive)
		want string
	}{
		"no tag":       {func(a *Archive) { a.Name = "registry.example:5000/team/app" }, "has no tag"},
		"no platform":  {func(a *Archive) { a.Images = nil }, "has no platform"},
		"arch twice":   {func(a *Archive) { a.Images[1].Arch = "arm64" }, "linux/arm64 given twice"},
		"unknown arch": {func(a *Archive) { a.Images[0].Arch = "riscv64" }, `architecture "riscv64" is not supported`},
	} {
		t.Run(name, func(t *testing.T) {
			a := testArchive(epoch)
			tc.edit(a)
			_, err := a.Write(io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Write() error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// dynamicProgram builds a small C program linked against the build
// machine's glibc, or skips when there is no C compiler.
func dynamicProgram(t *testing.T) string {
	t.Helper()
	if _, ok := arches[runtime.GOARCH]; !ok {
		t.Skipf("no sysroot layout known for %s", runtime.GOARCH)
	}
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc to build a dynamically linked program")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "hello.c")
	if err := os.WriteFile(src, []byte("#include <stdio.h>\n#include <math.h>\nint main(int c, char **v) { printf(\"hello from %s %.0f\\n\", v[0], lgamma(c + 2.0)); return 0; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "hello")
	if out, err := exec.Command(cc, "-o", bin, src, "-lm").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}

func TestAddBinaryCopiesWhatTheLoaderNeeds(t *testing.T) {
	bin := dynamicProgram(t)
	root := NewRootfs()
	if err := root.AddBinary("/usr/local/bin/hello", bin, runtime.GOARCH, "/"); err != nil {
		t.Fatalf("AddBinary: %v", err)
	}
	triplet := arches[runtime.GOARCH].triplet
	for _, p := range []string{"/lib/" + triplet + "/libc.so.6", "/lib/" + triplet + "/libm.so.6"} {
		if !root.Has(p) {
			t.Errorf("%s is not in the image", p)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("running the program inside the image's file system needs root (chroot)")
	}
	// Unpack the layer and run the program chrooted into it: the loader
	// must find every library without an ld.so.cache, as in a container.
	dir := t.TempDir()
	raw, err := root.tar(epoch)
	if err != nil {
		t.Fatal(err)
	}
	unpack(t, raw, dir)
	cmd := exec.Command("/usr/local/bin/hello")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: dir}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("running the program in the image: %v\n%s", err, out)
	}
	if got := string(out); got != "hello from /usr/local/bin/hello 1\n" {
		t.Fatalf("program printed %q", got)
	}
}

func unpack(t *testing.T, raw []byte, dir string) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, os.FileMode(h.Mode).Perm())
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, os.FileMode(h.Mode).Perm())
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestAddBinaryRefusesBadInput(t *testing.T) {
	bin := dynamicProgram(t)
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	notELF := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		src, arch, sysroot, want string
	}{
		"other architecture": {bin, other, "/", "built for"},
		"no sysroot":         {bin, runtime.GOARCH, "", "is dynamically linked (needs libm.so.6, libc.so.6)"},
		"empty sysroot":      {bin, runtime.GOARCH, t.TempDir(), "not found in sysroot"},
		"not ELF":            {notELF, runtime.GOARCH, "/", "not an ELF file"},
		"missing file":       {filepath.Join(t.TempDir(), "nothing"), runtime.GOARCH, "/", "no such file"},
		"unknown arch":       {bin, "mips", "/", `architecture "mips" is not supported`},
	} {
		t.Run(name, func(t *testing.T) {
			err := NewRootfs().AddBinary("/usr/local/bin/hello", tc.src, tc.arch, tc.sysroot)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AddBinary() error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
