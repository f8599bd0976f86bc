#!/usr/bin/env bash
# Runs Tessera's end-to-end tests (test/e2e) on a real cluster on this
# machine: `make e2e` builds what they need and calls this. The cluster
# (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and per
# node a containerd, runc and a kubelet) runs inside network, mount and PID
# namespaces of its own (test/e2e/realcluster explains why), so it cannot
# touch the host's network or files, and the kernel stops all of it when the
# test binary ends, however it ends. This script restores what namespaces
# cannot hold: the kernel settings the kubelet changes and the cgroups it
# creates.
#
#   hack/e2e.sh [go test flags...]   run (as root)
#   hack/e2e.sh --clean              remove what an interrupted run left
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${E2E_OUT:-_output/e2e}
STATE=/run/tessera-e2e.state   # sysctls saved by a run in progress
CGROUP_PREFIX=tessera-e2e      # test/e2e/realcluster.CgroupRoot
# The kernel settings the kubelet sets when it starts (setupKernelTunables).
SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes)

die() { echo "e2e: $*" >&2; exit 1; }

# The cgroups the nodes' kubelets created, deepest first. Only directories
# named after the e2e prefix are touched.
leftover_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/"$CGROUP_PREFIX"-* /sys/fs/cgroup/"$CGROUP_PREFIX"-*; do
    [[ -d $d ]] && find "$d" -depth -type d
  done
  return 0
}

restore() {
  if [[ -f $STATE ]]; then
    local k v
    while read -r k v; do
      echo "$v" > "/proc/sys/$k" || echo "e2e: could not restore $k to $v" >&2
    done < "$STATE"
    rm -f "$STATE"
  fi
  local d left=0
  while read -r d; do
    [[ -n $d ]] || continue
    rmdir "$d" 2>/dev/null || left=1
  done < <(leftover_cgroups)
  if (( left )); then
    echo "e2e: some cgroups under /sys/fs/cgroup/*/$CGROUP_PREFIX-* still hold processes; they were left alone" >&2
  fi
}

if [[ ${1:-} == --clean ]]; then
  [[ $EUID -eq 0 ]] || die "--clean must run as root"
  if [[ -f $OUT/run.pid ]] && kill -0 "$(cat "$OUT/run.pid")" 2>/dev/null; then
    die "a run is in progress (pid $(cat "$OUT/run.pid")); it cleans up after itself"
  fi
  restore
  rm -rf "$OUT/run" "$OUT/run.pid"
  echo "e2e: clean"
  exit 0
fi

[[ $EUID -eq 0 ]] || die "must run as root: it starts containerd and two kubelets (they run in namespaces of their own, see test/e2e/realcluster)"
# E2E_IMAGES: a directory with the two Tessera images to run instead of the
# ones make e2e builds, e.g. a release's (_output/release/vX.Y.Z).
IMAGES=${E2E_IMAGES:-$OUT/images}
for f in $OUT/e2e.test $OUT/images/sleeper.tar $OUT/k8s/kubelet $OUT/containerd/containerd $OUT/containerd/ctr $OUT/containerd/containerd-shim-runc-v2 bin/etcd bin/helm bin/kubectl-tessera; do
  [[ -e $f ]] || die "$f is missing: run make e2e, which builds it"
done
app=$(sed -n 's/^appVersion: *"*\([^"]*\)"*$/\1/p' manifests/charts/tessera/Chart.yaml)
for c in tessera-scheduler tessera-device-plugin; do
  f=$IMAGES/$c.tar
  [[ -e $f ]] || die "$f is missing: run make e2e, which builds it (or set E2E_IMAGES to a directory that has it)"
  # The chart installs the tag appVersion; an image of another tag would
  # never be found (the nodes cannot pull).
  tar -xOf "$f" index.json | grep -q "\"org.opencontainers.image.ref.name\":\"$app\"" ||
    die "$f is not tagged $app, the chart's appVersion: the chart would not find it"
done
if [[ -f $OUT/run.pid ]] && kill -0 "$(cat "$OUT/run.pid")" 2>/dev/null; then
  die "another run is in progress (pid $(cat "$OUT/run.pid"))"
fi
if [[ -f $STATE || -n $(leftover_cgroups) ]]; then
  die "an earlier run did not finish cleaning up ($STATE or /sys/fs/cgroup/*/$CGROUP_PREFIX-* exist): run 'hack/e2e.sh --clean' (or 'make e2e-clean') first"
fi
for cmd in runc unshare nsenter ip; do
  command -v "$cmd" >/dev/null || die "$cmd is not installed (make e2e-deps installs it with apt-get)"
done

# Save the kernel settings before anything can change them; restore them,
# and remove the cgroups, whatever happens next.
: > "$STATE.tmp"
for k in "${SYSCTLS[@]}"; do
  [[ -r /proc/sys/$k ]] && echo "$k $(cat "/proc/sys/$k")" >> "$STATE.tmp"
done
mv "$STATE.tmp" "$STATE"
echo $$ > "$OUT/run.pid"
trap 'restore; rm -rf "$OUT/run" "$OUT/run.pid"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rm -rf "$OUT/run"
mkdir -p "$OUT/run/images"
abs=$(cd "$OUT" && pwd)
ln -s "$(cd "$IMAGES" && pwd)/tessera-scheduler.tar" "$(cd "$IMAGES" && pwd)/tessera-device-plugin.tar" "$abs/images/sleeper.tar" "$abs/run/images/"
# bash is the namespace's PID 1: it reaps the containerd shims that are
# re-parented to it, and when the test binary ends it ends, taking every
# process of the namespace with it.
set +e
unshare --net --mount --pid --fork --mount-proc --propagation private \
  bash -c '"$@"; exit $?' e2e "$abs/e2e.test" \
  -e2e.dir="$abs/run" -e2e.bin-dir="$abs/k8s" -e2e.etcd="$PWD/bin/etcd" -e2e.helm="$PWD/bin/helm" \
  -e2e.kubectl-tessera="$PWD/bin/kubectl-tessera" -e2e.images="$abs/run/images" -e2e.repo="$PWD" \
  -e2e.containerd-dir="$abs/containerd" \
  -test.timeout=30m "$@"
rc=$?
set -e
if (( rc != 0 )); then
  echo "e2e: failed (exit $rc); the components' and pods' logs are in $OUT/logs" >&2
fi
rm -rf "$OUT/logs" && cp -r "$OUT/run/logs" "$OUT/logs" 2>/dev/null || true
# The pods' logs (Tessera's own among them) live in each node's /var/log.
for d in "$OUT"/run/nodes/*/log/pods; do
  [[ -d $d ]] && cp -r "$d" "$OUT/logs/$(basename "$(dirname "$(dirname "$d")")")-pods" 2>/dev/null
done
true
exit $rc
