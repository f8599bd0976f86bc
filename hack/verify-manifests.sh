#!/usr/bin/env bash
# Copyright The Tessera Authors.
# SPDX-License-Identifier: Apache-2.0
#
# Fails if manifests/install or the chart's copy of the scheduler profile is
# not what hack/update-manifests.sh (make manifests) produces now.

set -o errexit
set -o nounset
set -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "${ROOT}"

if ! cmp -s config/examples/tessera-scheduler.yaml manifests/charts/tessera/files/tessera-scheduler.yaml; then
    echo "verify-manifests: manifests/charts/tessera/files/tessera-scheduler.yaml differs from config/examples/tessera-scheduler.yaml; run 'make manifests'" >&2
    exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
hack/update-manifests.sh "${tmp}"
if ! diff -r manifests/install "${tmp}"; then
    echo "verify-manifests: manifests/install is out of date with manifests/charts/tessera; run 'make manifests'" >&2
    exit 1
fi
echo "verify-manifests: manifests/install is up to date"
