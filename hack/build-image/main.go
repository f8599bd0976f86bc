// Command build-image writes one of Tessera's container images as an OCI
// image layout tarball, for one or more linux platforms, from binaries
// already built: no container engine and no base image are involved
// (internal/ociimage says why). `make images` runs it; see
// docs/images.md.
//
//	build-image -name ghcr.io/tessera-gpu/tessera-scheduler:v0.1.0 \
//	  -o _output/images/tessera-scheduler.tar \
//	  -binary linux/amd64=_output/images/linux_amd64/tessera-scheduler \
//	  -binary linux/arm64=_output/images/linux_arm64/tessera-scheduler \
//	  -path /usr/local/bin/tessera-scheduler -user 65532:65532 -created 1765100000
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tessera-gpu/tessera/internal/ociimage"
)

// pairs is a repeatable KEY=VALUE flag.
type pairs map[string]string

func (p pairs) String() string { return fmt.Sprint(map[string]string(p)) }

func (p pairs) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not KEY=VALUE", s)
	}
	if _, dup := p[k]; dup {
		return fmt.Errorf("%s given twice", k)
	}
	p[k] = v
	return nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "build-image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("build-image", flag.ContinueOnError)
	binaries, sysroots, labels, env := pairs{}, pairs{}, pairs{}, pairs{}
	var (
		name    = fs.String("name", "", "image reference, registry/repository:tag (required)")
		out     = fs.String("o", "", "output file, the OCI layout tarball (required)")
		dst     = fs.String("path", "", "where the binary goes in the image; it is the entrypoint (required)")
		user    = fs.String("user", "", "user (uid:gid) the entrypoint runs as; empty means root")
		libs    = fs.String("libs", "", "comma-separated shared libraries to add besides the ones the binary needs (dynamically linked binaries only)")
		created = fs.Int64("created", -1, "build time, Unix seconds (default $SOURCE_DATE_EPOCH); every time in the image is this one")
	)
	fs.Var(binaries, "binary", "linux/ARCH=PATH of the binary for a platform; repeat for each platform (required)")
	fs.Var(sysroots, "sysroot", "linux/ARCH=DIR to copy a dynamically linked binary's libraries from: / for the build machine's architecture, /usr/<triplet> for a Debian cross package")
	fs.Var(labels, "label", "KEY=VALUE label of the image config; the org.opencontainers.image.* ones are also set on the image index")
	fs.Var(env, "env", "KEY=VALUE environment variable of the entrypoint")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for flagName, v := range map[string]string{"-name": *name, "-o": *out, "-path": *dst} {
		if v == "" {
			return fmt.Errorf("%s is required", flagName)
		}
	}
	if len(binaries) == 0 {
		return fmt.Errorf("-binary is required")
	}
	when, err := buildTime(*created)
	if err != nil {
		return err
	}
	for p := range sysroots {
		if _, ok := binaries[p]; !ok {
			return fmt.Errorf("-sysroot %s has no -binary", p)
		}
	}

	config := ocispec.ImageConfig{
		User:       *user,
		Entrypoint: []string{*dst},
		WorkingDir: "/",
		Labels:     labels,
		// Go binaries stop cleanly on SIGTERM, the default; say so for the
		// runtimes that read it.
		StopSignal: "SIGTERM",
	}
	for _, k := range sortedKeys(env) {
		config.Env = append(config.Env, k+"="+env[k])
	}
	if !hasPath(config.Env) {
		config.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, config.Env...)
	}
	archive := &ociimage.Archive{Name: *name, Created: when, Annotations: map[string]string{}}
	for k, v := range labels {
		if strings.HasPrefix(k, "org.opencontainers.image.") {
			archive.Annotations[k] = v
		}
	}
	var platforms []string
	for _, p := range sortedKeys(binaries) {
		arch, ok := strings.CutPrefix(p, "linux/")
		if !ok {
			return fmt.Errorf("platform %q: only linux/ARCH is supported", p)
		}
		root := ociimage.NewRootfs()
		if err := root.AddBinary(*dst, binaries[p], arch, sysroots[p]); err != nil {
			return err
		}
		if *libs != "" {
			if sysroots[p] == "" {
				return fmt.Errorf("-libs needs a -sysroot for %s", p)
			}
			if err := root.AddLibraries(arch, sysroots[p], strings.Split(*libs, ",")...); err != nil {
				return err
			}
		}
		archive.Images = append(archive.Images, ociimage.Image{Arch: arch, Rootfs: root, Config: config})
		platforms = append(platforms, p)
	}

	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	// Write next to the target and rename, so that an interrupted build
	// never leaves a truncated tarball under the final name.
	f, err := os.CreateTemp(filepath.Dir(*out), ".build-image-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	d, err := archive.Write(f)
	if err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), *out); err != nil {
		return err
	}
	fmt.Printf("%s: %s (%s) %s\n", *out, *name, strings.Join(platforms, ", "), d)
	return nil
}

func buildTime(flagValue int64) (time.Time, error) {
	if flagValue >= 0 {
		return time.Unix(flagValue, 0), nil
	}
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Time{}, fmt.Errorf("give -created or set SOURCE_DATE_EPOCH: the build time must be chosen, so that builds are reproducible")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not Unix seconds", s)
	}
	return time.Unix(n, 0), nil
}

func hasPath(env []string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, "PATH=") {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
