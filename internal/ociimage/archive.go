package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	// go-digest computes sha256 digests through crypto.SHA256, which is
	// only available once the package is linked in.
	_ "crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Image is one platform's variant of an image.
type Image struct {
	// Arch is the GOARCH of the platform (the OS is always linux).
	Arch string
	// Rootfs is the image's file system, written as its one layer.
	Rootfs *Rootfs
	// Config is how a runtime starts the image: entrypoint, user,
	// environment, labels.
	Config ocispec.ImageConfig
}

// Archive is a multi-platform image written as an OCI image layout.
type Archive struct {
	// Name is the full reference, e.g. ghcr.io/tessera-gpu/tessera-scheduler:v0.1.0.
	// containerd and docker name the image they import after it.
	Name string
	// Created is the build time recorded in the configs, the layer's file
	// times and the index's annotations; pass the commit's time (or
	// SOURCE_DATE_EPOCH) for a reproducible image.
	Created time.Time
	// Annotations are added to the image index (the version, the source).
	Annotations map[string]string
	// Images are the platform variants, at least one, each arch once.
	Images []Image
}

// blobs holds content by digest, in the order written.
type blobs struct {
	order []digest.Digest
	data  map[digest.Digest][]byte
}

func (b *blobs) add(mediaType string, data []byte) ocispec.Descriptor {
	d := digest.FromBytes(data)
	if _, ok := b.data[d]; !ok {
		b.order = append(b.order, d)
		b.data[d] = data
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

func (b *blobs) addJSON(mediaType string, v any) (ocispec.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return b.add(mediaType, data), nil
}

// Write writes the archive as an OCI image layout in one tar stream and
// returns the digest of the image index, the digest a registry would give
// the pushed image.
func (a *Archive) Write(w io.Writer) (digest.Digest, error) {
	if err := a.validate(); err != nil {
		return "", err
	}
	created := a.Created.UTC()
	b := &blobs{data: map[digest.Digest][]byte{}}
	// The index lists the platforms in one order whatever order they were
	// given in, so that the digest depends only on the content.
	images := append([]Image(nil), a.Images...)
	sort.Slice(images, func(i, j int) bool { return images[i].Arch < images[j].Arch })
	var manifests []ocispec.Descriptor
	for _, img := range images {
		desc, err := img.write(b, created)
		if err != nil {
			return "", fmt.Errorf("linux/%s: %w", img.Arch, err)
		}
		manifests = append(manifests, desc)
	}
	annotations := map[string]string{ocispec.AnnotationCreated: created.Format(time.RFC3339)}
	for k, v := range a.Annotations {
		annotations[k] = v
	}
	index, err := b.addJSON(ocispec.MediaTypeImageIndex, ocispec.Index{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageIndex,
		Manifests:   manifests,
		Annotations: annotations,
	})
	if err != nil {
		return "", err
	}
	// The layout's own index names the image two ways: containerd and
	// docker read io.containerd.image.name, the OCI tools the ref name
	// (the tag).
	index.Annotations = map[string]string{
		"io.containerd.image.name": a.Name,
		ocispec.AnnotationRefName:  tag(a.Name),
	}
	top, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{index},
	})
	if err != nil {
		return "", err
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return "", err
	}
	tw := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if strings.HasSuffix(name, "/") {
			h = &tar.Header{Name: name, Mode: 0o755, ModTime: created, Typeflag: tar.TypeDir, Format: tar.FormatPAX}
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := put(ocispec.ImageLayoutFile, layout); err != nil {
		return "", err
	}
	if err := put("index.json", top); err != nil {
		return "", err
	}
	if err := put("blobs/", nil); err != nil {
		return "", err
	}
	if err := put("blobs/sha256/", nil); err != nil {
		return "", err
	}
	sort.Slice(b.order, func(i, j int) bool { return b.order[i] < b.order[j] })
	for _, d := range b.order {
		if err := put("blobs/sha256/"+d.Encoded(), b.data[d]); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	return index.Digest, nil
}

func (a *Archive) validate() error {
	if a.Name == "" || !strings.Contains(a.Name[strings.LastIndex(a.Name, "/")+1:], ":") {
		return fmt.Errorf("image name %q has no tag (want registry/repository:tag)", a.Name)
	}
	if len(a.Images) == 0 {
		return fmt.Errorf("image %s has no platform", a.Name)
	}
	seen := map[string]bool{}
	for _, img := range a.Images {
		if _, ok := arches[img.Arch]; !ok {
			return fmt.Errorf("image %s: architecture %q is not supported (want one of amd64, arm64)", a.Name, img.Arch)
		}
		if seen[img.Arch] {
			return fmt.Errorf("image %s: linux/%s given twice", a.Name, img.Arch)
		}
		seen[img.Arch] = true
	}
	return nil
}

// write adds the layer, config and manifest of one platform and returns
// the manifest's descriptor.
func (img Image) write(b *blobs, created time.Time) (ocispec.Descriptor, error) {
	raw, err := img.Rootfs.tar(created)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if _, err := zw.Write(raw); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := zw.Close(); err != nil {
		return ocispec.Descriptor{}, err
	}
	layer := b.add(ocispec.MediaTypeImageLayerGzip, gz.Bytes())
	platform := ocispec.Platform{OS: "linux", Architecture: img.Arch}
	if img.Arch == "arm64" {
		platform.Variant = "v8"
	}
	config, err := b.addJSON(ocispec.MediaTypeImageConfig, ocispec.Image{
		Created:  &created,
		Platform: platform,
		Config:   img.Config,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(raw)}},
		History:  []ocispec.History{{Created: &created, CreatedBy: "tessera internal/ociimage"}},
	})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	manifest, err := b.addJSON(ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config,
		Layers:    []ocispec.Descriptor{layer},
	})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	manifest.Platform = &platform
	return manifest, nil
}

// tag returns the tag of a reference such as registry:5000/repo:tag.
func tag(name string) string {
	last := name[strings.LastIndex(name, "/")+1:]
	return last[strings.LastIndex(last, ":")+1:]
}
