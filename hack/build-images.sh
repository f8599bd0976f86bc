#!/usr/bin/env bash
# Builds the tessera-scheduler and tessera-device-plugin images as OCI image
# layout tarballs, without docker: the binaries are built for each platform
# with the Makefile's flags and internal/ociimage (hack/build-image) puts
# them into images. `make images` calls this; docs/images.md explains it.
#
# Environment (the Makefile sets all of it):
#   PLATFORMS          space-separated, e.g. "linux/amd64 linux/arm64"
#   IMAGE_REGISTRY     e.g. ghcr.io/tessera-gpu
#   IMAGE_TAG          e.g. v0.1.0
#   VERSION, COMMIT    the version and commit the binaries report
#   LDFLAGS            the Makefile's link flags
#   SOURCE_DATE_EPOCH  the build time recorded everywhere (the commit's)
#   OUT                output directory
set -euo pipefail
cd "$(dirname "$0")/.."

: "${PLATFORMS:?}" "${IMAGE_REGISTRY:?}" "${IMAGE_TAG:?}" "${VERSION:?}" "${COMMIT:?}" "${LDFLAGS:?}" "${SOURCE_DATE_EPOCH:?}" "${OUT:?}"
GO=${GO:-go}
host_arch=$($GO env GOHOSTARCH)

# The Debian multiarch triplet of a GOARCH: the cross compiler's prefix and
# the sysroot of Debian's libc6-<arch>-cross package.
triplet() {
  case "$1" in
    amd64) echo x86_64-linux-gnu ;;
    arm64) echo aarch64-linux-gnu ;;
    *) echo "images: platform linux/$1 is not supported (linux/amd64, linux/arm64)" >&2; return 1 ;;
  esac
}

# Check every platform before building anything, so that a missing cross
# compiler is reported at once and not after minutes of building.
for p in $PLATFORMS; do
  os=${p%%/*} arch=${p#*/}
  if [[ $os != linux ]]; then
    echo "images: platform $p is not supported: images are linux/amd64 and linux/arm64" >&2; exit 1
  fi
  t=$(triplet "$arch")
  if [[ $arch != "$host_arch" ]] && ! command -v "$t-gcc" >/dev/null; then
    echo "images: building linux/$arch needs the Debian cross compiler for cgo (go-nvml):" >&2
    echo "  apt-get install gcc-$t   (or PLATFORMS=linux/$host_arch to build only this machine's platform)" >&2
    exit 1
  fi
done

mkdir -p "$OUT/bin"
$GO build -o "$OUT/bin/build-image" ./hack/build-image

# The build time, version and source go into both images' labels and the
# image index (OCI annotations), so `crane config`/`ctr images ls` show them.
labels=(
  -label "org.opencontainers.image.version=$VERSION"
  -label "org.opencontainers.image.revision=$COMMIT"
  -label "org.opencontainers.image.created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
  -label "org.opencontainers.image.source=https://github.com/tessera-gpu/tessera"
  -label "org.opencontainers.image.licenses=Apache-2.0"
)
sched_args=() plugin_args=()
for p in $PLATFORMS; do
  arch=${p#*/}
  t=$(triplet "$arch")
  dir="$OUT/linux_$arch"
  mkdir -p "$dir"
  echo "== linux/$arch: tessera-scheduler (static, CGO_ENABLED=0)"
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch $GO build -trimpath -ldflags "-s -w $LDFLAGS" -o "$dir/tessera-scheduler" ./cmd/tessera-scheduler
  # go-nvml loads libnvidia-ml with dlopen, which a static glibc program
  # cannot do reliably, so the device plugin is linked dynamically against
  # Debian's glibc and the image carries that glibc (see docs/images.md).
  if [[ $arch == "$host_arch" ]]; then cc=gcc sysroot=/; else cc=$t-gcc sysroot=/usr/$t; fi
  echo "== linux/$arch: tessera-device-plugin (cgo, $cc, glibc from $sysroot)"
  CGO_ENABLED=1 CC=$cc GOOS=linux GOARCH=$arch $GO build -trimpath -ldflags "-s -w $LDFLAGS" -o "$dir/tessera-device-plugin" ./cmd/tessera-device-plugin
  sched_args+=(-binary "linux/$arch=$dir/tessera-scheduler")
  plugin_args+=(-binary "linux/$arch=$dir/tessera-device-plugin" -sysroot "linux/$arch=$sysroot")
done

"$OUT/bin/build-image" -name "$IMAGE_REGISTRY/tessera-scheduler:$IMAGE_TAG" -o "$OUT/tessera-scheduler.tar" \
  -path /usr/local/bin/tessera-scheduler -user 65532:65532 -created "$SOURCE_DATE_EPOCH" \
  -label "org.opencontainers.image.title=tessera-scheduler" "${labels[@]}" "${sched_args[@]}"
# The device plugin runs as root: the kubelet's device-plugin directory is
# root's. NVIDIA_* ask the NVIDIA container toolkit to mount the host
# driver's libnvidia-ml (utility capability only: no compute libraries). The
# libraries besides libc are the ones the driver's libnvidia-ml needs.
"$OUT/bin/build-image" -name "$IMAGE_REGISTRY/tessera-device-plugin:$IMAGE_TAG" -o "$OUT/tessera-device-plugin.tar" \
  -path /usr/local/bin/tessera-device-plugin -user 0:0 -created "$SOURCE_DATE_EPOCH" \
  -env NVIDIA_VISIBLE_DEVICES=all -env NVIDIA_DRIVER_CAPABILITIES=utility \
  -libs libc.so.6,libm.so.6,libdl.so.2,libpthread.so.0,librt.so.1 \
  -label "org.opencontainers.image.title=tessera-device-plugin" "${labels[@]}" "${plugin_args[@]}"

(cd "$OUT" && sha256sum tessera-scheduler.tar tessera-device-plugin.tar > SHA256SUMS)
