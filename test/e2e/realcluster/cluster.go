package realcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Addresses inside the cluster's network namespace. They are private
// ranges, which is why the cluster must never run in the host's namespace.
const (
	// APIServerIP is where kube-apiserver advertises itself.
	APIServerIP = "192.168.200.1"
	// ServiceIP is the kubernetes Service's ClusterIP (the first address
	// of ServiceCIDR): pods reach the API server there. With no
	// kube-proxy, the address sits on the namespace's own interface and
	// kube-apiserver listens on 443 itself.
	ServiceIP   = "10.96.0.1"
	serviceCIDR = "10.96.0.0/16"
)

// CgroupRoot is the cgroup under which every node's kubelet creates its pod
// cgroups, in each cgroup hierarchy (cgroupRoot in the KubeletConfiguration):
// <CgroupRoot>-<node name>. hack/e2e.sh removes what is left of them.
const CgroupRoot = "/tessera-e2e"

// Config says what to run.
type Config struct {
	// Dir holds everything the cluster writes on disk: certificates,
	// etcd's data, containerd's content and snapshots, logs.
	Dir string
	// BinDir holds kube-apiserver, kube-controller-manager,
	// kube-scheduler, kubelet and kubectl.
	BinDir string
	// Etcd is the etcd binary.
	Etcd string
	// ContainerdDir holds containerd 2.x's containerd, ctr and
	// containerd-shim-runc-v2 (make e2e builds them from the module proxy:
	// 2.x resolves CDI devices, which Debian's 1.6 does not). Runc and
	// CNIBinDir are Debian's runc and CNI plugins (/usr/bin/runc,
	// /usr/lib/cni).
	ContainerdDir, Runc, CNIBinDir string
	// Nodes are the nodes to start, at least one.
	Nodes []NodeConfig
	// SandboxImage is the pause image every pod sandbox runs, already in
	// an OCI tarball at SandboxImageFile; nothing can be pulled.
	SandboxImage, SandboxImageFile string
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
}

// Cluster is a running cluster.
type Cluster struct {
	cfg Config
	pki *pki
	// Kubeconfig is an administrator's kubeconfig (system:masters).
	Kubeconfig string
	// Client uses Kubeconfig.
	Client kubernetes.Interface
	// Nodes are the nodes, in the order of Config.Nodes.
	Nodes []*Node

	etcd, apiserver, controllerManager, scheduler *process
}

func (c *Cluster) logf(format string, args ...any) {
	if c.cfg.Logf != nil {
		c.cfg.Logf(format, args...)
	}
}

// Up starts the cluster and returns when the API server answers and every
// node is Ready. On error everything it started is stopped again.
func Up(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("realcluster: no nodes")
	}
	if err := checkIsolated(); err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg}
	defer func() {
		if err != nil {
			c.Down()
		}
	}()
	began := time.Now()
	if err := setupNamespace(len(cfg.Nodes)); err != nil {
		return nil, err
	}
	if c.pki, err = newPKI(filepath.Join(cfg.Dir, "pki")); err != nil {
		return nil, err
	}
	if err := c.startControlPlane(ctx); err != nil {
		return nil, err
	}
	c.logf("control plane up in %v", time.Since(began).Round(time.Millisecond))
	for i, nc := range cfg.Nodes {
		n, err := c.startNode(ctx, i, nc)
		if n != nil {
			c.Nodes = append(c.Nodes, n)
		}
		if err != nil {
			return nil, err
		}
	}
	for _, n := range c.Nodes {
		if err := c.waitNodeReady(ctx, n); err != nil {
			return nil, err
		}
	}
	c.logf("%d nodes Ready %v after start", len(c.Nodes), time.Since(began).Round(time.Millisecond))
	return c, nil
}

// checkIsolated refuses to run in a network namespace that has interfaces
// besides loopback: the cluster puts private addresses and routes on the
// namespace, and must not do it on the host's.
func checkIsolated() error {
	if os.Geteuid() != 0 {
		return errors.New("realcluster: must run as root (it starts containerd and kubelets)")
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, i := range ifs {
		if i.Name != "lo" && !strings.HasPrefix(i.Name, "tessera-br") && !strings.HasPrefix(i.Name, "veth") {
			return fmt.Errorf("realcluster: the network namespace has interface %s: run in a namespace of its own (hack/e2e.sh does, with unshare --net --mount --pid --fork)", i.Name)
		}
	}
	return nil
}

// setupNamespace gives the namespaces what the cluster needs: loopback up
// with the API server's, the nodes' and the Service's addresses, and fresh
// /run, /var/lib and /var/log.
func setupNamespace(nodes int) error {
	// The addresses go on loopback: it takes any address, and the kernel
	// of this machine may have no module for a dummy interface. Every
	// component is given its address explicitly, so no default route is
	// needed.
	cmds := [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", APIServerIP + "/32", "dev", "lo"},
		{"ip", "addr", "add", ServiceIP + "/32", "dev", "lo"},
	}
	for i := range nodes {
		cmds = append(cmds, []string{"ip", "addr", "add", nodeIP(i) + "/32", "dev", "lo"})
	}
	for _, argv := range cmds {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, out)
		}
	}
	// Mounts made here stay in this namespace: unshare made every mount
	// private before the test binary started.
	for _, dir := range []string{"/run", "/var/lib", "/var/log"} {
		if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "mode=755"); err != nil {
			return fmt.Errorf("mounting a tmpfs on %s: %w", dir, err)
		}
	}
	return nil
}

func nodeIP(i int) string { return fmt.Sprintf("192.168.200.%d", 10+i) }

func (c *Cluster) startControlPlane(ctx context.Context) error {
	dir := c.cfg.Dir
	p := c.pki
	var err error
	if c.etcd, err = start(dir, "etcd", nil, c.cfg.Etcd,
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380", "--log-level", "warn",
		"--unsafe-no-fsync"); err != nil {
		return err
	}

	serving, servingKey, err := p.issue("apiserver", "kube-apiserver", nil,
		"127.0.0.1", APIServerIP, ServiceIP, "localhost",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
	if err != nil {
		return err
	}
	kubeletClient, kubeletClientKey, err := p.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"})
	if err != nil {
		return err
	}
	saPub, saKey, err := p.serviceAccountKey()
	if err != nil {
		return err
	}
	if c.apiserver, err = start(dir, "kube-apiserver", nil, filepath.Join(c.cfg.BinDir, "kube-apiserver"),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", "0.0.0.0", "--secure-port", "443", "--advertise-address", APIServerIP,
		"--tls-cert-file", serving, "--tls-private-key-file", servingKey,
		"--client-ca-file", p.CAFile(),
		"--kubelet-client-certificate", kubeletClient, "--kubelet-client-key", kubeletClientKey,
		"--kubelet-preferred-address-types", "InternalIP",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", saPub, "--service-account-signing-key-file", saKey,
		"--service-cluster-ip-range", serviceCIDR,
		"--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
		"--allow-privileged=true", "--profiling=false"); err != nil {
		return err
	}
	server := "https://127.0.0.1:443"
	admin, adminKey, err := p.issue("admin", "e2e-admin", []string{"system:masters"})
	if err != nil {
		return err
	}
	c.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := p.kubeconfig(c.Kubeconfig, server, admin, adminKey); err != nil {
		return err
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	// Tests create bursts of pods; client-go's default of 5 requests a
	// second would pace them instead of the cluster.
	restCfg.QPS, restCfg.Burst = 200, 400
	if c.Client, err = kubernetes.NewForConfig(restCfg); err != nil {
		return err
	}
	if err := c.waitHealthy(ctx, c.apiserver); err != nil {
		return err
	}

	for _, comp := range []struct {
		name, user string
		proc       **process
		args       []string
	}{
		{"kube-controller-manager", "system:kube-controller-manager", &c.controllerManager, []string{
			"--service-account-private-key-file", saKey, "--root-ca-file", p.CAFile(),
			"--use-service-account-credentials=true", "--leader-elect=false",
			"--bind-address", "127.0.0.1", "--secure-port", "10257", "--profiling=false",
		}},
		{"kube-scheduler", "system:kube-scheduler", &c.scheduler, []string{
			"--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", "10259", "--profiling=false",
		}},
	} {
		cert, key, err := p.issue(comp.name, comp.user, nil)
		if err != nil {
			return err
		}
		kc := filepath.Join(dir, comp.name+".kubeconfig")
		if err := p.kubeconfig(kc, server, cert, key); err != nil {
			return err
		}
		args := append([]string{filepath.Join(c.cfg.BinDir, comp.name), "--kubeconfig", kc}, comp.args...)
		if *comp.proc, err = start(dir, comp.name, nil, args...); err != nil {
			return err
		}
	}
	return nil
}

// waitHealthy waits until kube-apiserver answers /readyz, failing early
// with its log when it exits.
func (c *Cluster) waitHealthy(ctx context.Context, p *process) error {
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		if done, err := p.exited(); done {
			return false, fmt.Errorf("%s exited (%v)", p.name, err)
		}
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %s: %w\n%s", p.name, err, p.tail())
	}
	return nil
}

func (c *Cluster) waitNodeReady(ctx context.Context, n *Node) error {
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, p := range []*process{n.containerd, n.kubeletProcess()} {
			if done, err := p.exited(); done {
				return false, fmt.Errorf("%s exited (%v)", p.name, err)
			}
		}
		node, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == v1.NodeReady {
				return cond.Status == v1.ConditionTrue, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for node %s to be Ready: %w\nkubelet log:\n%s", n.Name, err, n.kubeletProcess().tail())
	}
	return nil
}

// Down stops everything Up started, nodes first: each node's pods are
// deleted and their containers gone before its kubelet and containerd
// stop, so that no shim, mount or network namespace is left behind.
func (c *Cluster) Down() {
	for i := len(c.Nodes) - 1; i >= 0; i-- {
		c.Nodes[i].stop(c)
	}
	for _, p := range []*process{c.scheduler, c.controllerManager, c.apiserver, c.etcd} {
		if p != nil {
			if err := p.stop(20 * time.Second); err != nil {
				c.logf("%v", err)
			}
		}
	}
}

// Kubectl runs the cluster's kubectl with the administrator's kubeconfig
// and returns its standard output; the error carries standard error.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.cfg.BinDir, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}
