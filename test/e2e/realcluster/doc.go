// Package realcluster runs a real Kubernetes cluster on one machine for
// Tessera's end-to-end tests: etcd, kube-apiserver, kube-controller-manager
// and kube-scheduler as processes, and nodes made of a containerd, runc and
// a kubelet each. Pods run as real containers.
//
// The cluster lives inside namespaces the caller creates (hack/e2e.sh runs
// the e2e test binary under `unshare --net --mount --pid --fork`), which is
// what keeps the host as it was:
//   - network: every address (the API server's, the nodes', the pod
//     bridges', the kubernetes Service's 10.96.0.1) is on interfaces of that
//     namespace, so nothing is routed to or from the host's networks;
//   - mount: /run, /var/lib and /var/log are fresh tmpfs mounts, so the
//     kubelet's and CNI's files (device-plugin sockets, netns handles, pod
//     log links, IPAM leases) never reach the host's directories; each node
//     has its own mount namespace in which its directory is mounted on
//     /var/lib/kubelet, so two kubelets keep the standard paths (the chart's
//     defaults) without sharing device-plugin sockets;
//   - pid: when the test binary ends, however it ends, the kernel ends
//     every process of the cluster with it.
//
// What namespaces cannot hold, the caller restores: the kernel settings the
// kubelet changes (see hack/e2e.sh) and the cgroups it creates (CgroupRoot).
package realcluster
