#!/usr/bin/env bash
# Builds every artifact of a Tessera release into one directory:
#
#   _output/release/<version>/
#     tessera-scheduler.tar, tessera-device-plugin.tar   multi-arch OCI image tarballs, tagged <version>
#     tessera-<chart version>.tgz                         the chart (helm package), appVersion <version>
#     kubectl-tessera_<version>_<os>_<arch>.tar.gz|.zip  the kubectl plugin, with LICENSE
#     tessera.yaml                                        the krew plugin manifest, checksums filled in
#     CHANGELOG.md                                        the release's section of CHANGELOG.md
#     SHA256SUMS
#
# `make release VERSION=vX.Y.Z` calls it; .github/workflows/release.yml
# publishes the directory on a tag. Every file is a function of the commit:
# times are the commit's (SOURCE_DATE_EPOCH), so two runs give the same bytes.
#
# Environment (the Makefile sets it): VERSION COMMIT LDFLAGS SOURCE_DATE_EPOCH
# IMAGE_REGISTRY HELM, and optionally PLATFORMS for the images.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "release: $*" >&2; exit 1; }
: "${VERSION:?}" "${COMMIT:?}" "${LDFLAGS:?}" "${SOURCE_DATE_EPOCH:?}" "${IMAGE_REGISTRY:?}" "${HELM:?}"
GO=${GO:-go}
[[ $VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || die "VERSION=$VERSION is not a semantic version such as v0.2.0 or v0.2.0-rc.1"

# The release notes: CHANGELOG.md's section "## <version>" or
# "## Unreleased (<version>)", up to the next "## ".
notes=$(awk -v v="$VERSION" '
  /^## / { if (found) exit; if ($0 == "## " v || $0 == "## Unreleased (" v ")") found = 1 }
  found { print }' CHANGELOG.md)
[[ -n $notes ]] || die "CHANGELOG.md has no section \"## $VERSION\" (or \"## Unreleased ($VERSION)\"): write the release notes first"

OUT=_output/release/$VERSION
rm -rf "$OUT"
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%s\n' "$notes" > "$OUT/CHANGELOG.md"

echo "== images ($VERSION)"
make --no-print-directory images VERSION="$VERSION" IMAGE_TAG="$VERSION" IMAGES_DIR="$work/images" ${PLATFORMS:+PLATFORMS="$PLATFORMS"}
cp "$work/images/tessera-scheduler.tar" "$work/images/tessera-device-plugin.tar" "$OUT/"

echo "== chart"
"$HELM" package manifests/charts/tessera --app-version "$VERSION" -d "$work/chart" >/dev/null
chart=$(basename "$work"/chart/tessera-*.tgz)
cp "$work/chart/$chart" "$OUT/"

echo "== kubectl-tessera"
stamp() { find "$@" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +; }
for p in linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64; do
  os=${p%/*} arch=${p#*/}
  dir="$work/kubectl/${os}_$arch"
  exe=kubectl-tessera
  [[ $os == windows ]] && exe=kubectl-tessera.exe
  mkdir -p "$dir"
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch $GO build -trimpath -ldflags "-s -w $LDFLAGS" -o "$dir/$exe" ./cmd/kubectl-tessera
  cp LICENSE "$dir/"
  stamp "$dir"
  name="kubectl-tessera_${VERSION}_${os}_$arch"
  if [[ $os == windows ]]; then
    (cd "$dir" && python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for f in sys.argv[2:]:
        z.write(f)' "$OLDPWD/$OUT/$name.zip" "$exe" LICENSE)
  else
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" -C "$dir" -cf - "$exe" LICENSE | gzip -n -9 > "$OUT/$name.tar.gz"
  fi
done

echo "== krew manifest"
krew=$(sed "s/VERSION/$VERSION/g" manifests/krew/tessera.yaml)
for f in "$OUT"/kubectl-tessera_*; do
  base=$(basename "$f")
  key=${base#kubectl-tessera_"${VERSION}"_}
  key=${key%.tar.gz}
  key=${key%.zip}
  key=SHA256_$(tr '[:lower:]' '[:upper:]' <<<"$key")
  krew=${krew//$key/$(sha256sum "$f" | cut -d' ' -f1)}
done
if grep -q 'SHA256_' <<<"$krew"; then
  die "the krew manifest names an archive this release did not build: $(grep -o 'SHA256_[A-Z0-9_]*' <<<"$krew" | head -1)"
fi
printf '%s\n' "$krew" > "$OUT/tessera.yaml"

(cd "$OUT" && sha256sum -- * | grep -v ' SHA256SUMS$' > SHA256SUMS)
stamp "$OUT"
echo "release $VERSION: $OUT"
ls -l "$OUT"
