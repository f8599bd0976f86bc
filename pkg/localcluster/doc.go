// Package localcluster runs a real Kubernetes control plane inside one Go
// process: an embedded etcd, the real kube-apiserver and tessera-scheduler
// built from the same registry as the binary. The in-process cluster tests
// and `make demo` both run on it, so the demo shows what the tests prove.
//
// It is meant for tests and demos on one machine: the apiserver trusts a
// loopback admin token and disables admission plugins that need controllers
// this process does not run.
package localcluster
