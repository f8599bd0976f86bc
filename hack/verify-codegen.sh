#!/usr/bin/env bash
# Copyright The Tessera Authors.
# SPDX-License-Identifier: Apache-2.0
#
# Verifies that the generated code checked into the tree is what
# hack/update-codegen.sh produces now. It copies the module's source files
# into a temporary directory, regenerates there and compares, so the working
# tree is never modified. Exits non-zero, with a diff, when generated code is
# stale.
#
# Usage: hack/verify-codegen.sh

set -o errexit
set -o nounset
set -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "${ROOT}"

# Paths, relative to the module root, that hold generated code.
GENERATED_PATHS=(
    "api"
    "pkg/generated"
)

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tessera-verify-codegen.XXXXXX")"
cleanup() { rm -rf "${TMP}"; }
trap cleanup EXIT

# Copy the source tree: tracked files plus untracked files that git does not
# ignore (so it works both in a fresh clone and on uncommitted changes).
if git -C "${ROOT}" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "${ROOT}" ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done \
        | tar -C "${ROOT}" --null -T - -cf - \
        | tar -C "${TMP}" -xf -
else
    tar -C "${ROOT}" --exclude=./.git -cf - . | tar -C "${TMP}" -xf -
fi

echo "verify-codegen: regenerating in ${TMP}"
if ! "${TMP}/hack/update-codegen.sh" >"${TMP}.log" 2>&1; then
    cat "${TMP}.log" >&2
    rm -f "${TMP}.log"
    echo "verify-codegen: FAILED: hack/update-codegen.sh did not run cleanly" >&2
    exit 1
fi
rm -f "${TMP}.log"

stale=0
for p in "${GENERATED_PATHS[@]}"; do
    if ! diff -Nur "${ROOT}/${p}" "${TMP}/${p}"; then
        stale=1
    fi
done

if [[ "${stale}" -ne 0 ]]; then
    echo >&2
    echo "verify-codegen: FAILED: generated code is out of date (see the diff above)." >&2
    echo "verify-codegen: run hack/update-codegen.sh and include the result in your change." >&2
    exit 1
fi
echo "verify-codegen: generated code is up to date."
