// Package ociimage writes container images without a container engine: an
// image is a set of files and a run configuration, and the result is an OCI
// image layout in one tar file, with one image manifest per platform behind
// an image index. containerd (`ctr images import`), docker (25 and later),
// skopeo and crane all read that form.
//
// Tessera's images are built this way because its build machines have no
// docker and reach no registry, and because a build that is a pure function
// of its inputs can be checked: every timestamp is the one passed in, files
// are written in sorted order with root ownership, and gzip output depends
// only on the bytes, so the same inputs give the same digests.
//
// Binaries linked against glibc (go-nvml needs cgo) get the shared libraries
// they load copied from a sysroot of the target architecture: the Debian
// libc6 package for the build machine's own architecture, libc6-<arch>-cross
// for the others. See Rootfs.AddDynamic.
package ociimage
