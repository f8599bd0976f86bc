#!/usr/bin/env bash
# Checks the artifacts hack/release.sh built for VERSION: every file is
# there and matches SHA256SUMS, the chart installs the release's image tags,
# both images are tagged VERSION for linux/amd64 and linux/arm64, the krew
# manifest's checksums are the archives', and this machine's kubectl-tessera
# reports VERSION. `make release` runs it after building.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${VERSION:?}" "${HELM:?}"
OUT=_output/release/$VERSION
fail() { echo "release-check: $*" >&2; exit 1; }
[[ -d $OUT ]] || fail "$OUT does not exist: run make release VERSION=$VERSION"

want=(tessera-scheduler.tar tessera-device-plugin.tar tessera.yaml CHANGELOG.md SHA256SUMS)
for p in linux_amd64 linux_arm64 darwin_amd64 darwin_arm64 windows_amd64 windows_arm64; do
  ext=tar.gz; [[ $p == windows_* ]] && ext=zip
  want+=("kubectl-tessera_${VERSION}_$p.$ext")
done
for f in "${want[@]}"; do [[ -s $OUT/$f ]] || fail "$OUT/$f is missing or empty"; done
chart=$(ls "$OUT"/tessera-*.tgz 2>/dev/null | head -1)
[[ -n $chart ]] || fail "no packaged chart in $OUT"
(cd "$OUT" && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS does not match the files"
n=$(wc -l < "$OUT/SHA256SUMS")
(( n == ${#want[@]} )) || fail "SHA256SUMS lists $n files, the release has $(( ${#want[@]} ))"

[[ $("$HELM" show chart "$chart" | sed -n 's/^appVersion: *"*\([^"]*\)"*$/\1/p') == "$VERSION" ]] || fail "the chart's appVersion is not $VERSION"
images=$("$HELM" template tessera "$chart" -n tessera-system --set devicePlugin.taintNode=true | sed -n 's/^ *image: *"*\([^"]*\)"*$/\1/p' | sort -u)
for c in tessera-scheduler tessera-device-plugin; do
  grep -qx "ghcr.io/tessera-gpu/$c:$VERSION" <<<"$images" || fail "the chart does not install $c:$VERSION (it names: $images)"
done
[[ $(wc -l <<<"$images") -eq 2 ]] || fail "the chart names other images: $images"

for c in tessera-scheduler tessera-device-plugin; do
  python3 - "$OUT/$c.tar" "$VERSION" <<'PY' || fail "image $c is not tagged $VERSION for linux/amd64 and linux/arm64"
import json, sys, tarfile
tar, version = tarfile.open(sys.argv[1]), sys.argv[2]
read = lambda name: json.load(tar.extractfile(name))
top = read("index.json")["manifests"][0]
assert top["annotations"]["org.opencontainers.image.ref.name"] == version, top
assert top["annotations"]["io.containerd.image.name"].endswith(":" + version), top
index = read("blobs/sha256/" + top["digest"].split(":")[1])
platforms = sorted(m["platform"]["architecture"] for m in index["manifests"])
assert platforms == ["amd64", "arm64"], platforms
assert index["annotations"]["org.opencontainers.image.version"] == version, index["annotations"]
PY
done

for f in "$OUT"/kubectl-tessera_*; do
  sum=$(sha256sum "$f" | cut -d' ' -f1)
  grep -q "sha256: $sum" "$OUT/tessera.yaml" || fail "the krew manifest does not carry the checksum of $(basename "$f")"
done
grep -q "version: $VERSION" "$OUT/tessera.yaml" || fail "the krew manifest's version is not $VERSION"

host="$(go env GOOS)_$(go env GOARCH)"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
tar -xzf "$OUT/kubectl-tessera_${VERSION}_$host.tar.gz" -C "$tmp"
"$tmp/kubectl-tessera" version | grep -q "$VERSION" || fail "kubectl-tessera ($host) does not report $VERSION: $("$tmp/kubectl-tessera" version)"
echo "release-check: $OUT is complete"
