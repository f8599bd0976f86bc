// Package version reports the version of Tessera's binaries. The Makefile
// sets the variables at link time from git.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

var (
	// Version is Tessera's version, e.g. v0.1.0 or v0.1.0-3-gabcdef0.
	Version = ""
	// Commit is the git commit the binary was built from.
	Commit = ""
	// KubernetesVersion is the version of the Kubernetes libraries.
	KubernetesVersion = "v1.37.2"
)

// String describes the binary in one line, e.g.
// "tessera-scheduler v0.1.0 (commit abc123, kubernetes v1.37.2, go1.26.8 linux/amd64)".
func String(program string) string {
	v, c := Version, Commit
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && c == "" {
				c = s.Value
			}
		}
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	if v == "" {
		v = "devel"
	}
	if c == "" {
		c = "unknown"
	}
	return fmt.Sprintf("%s %s (commit %s, kubernetes %s, %s %s/%s)", program, v, c, KubernetesVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
