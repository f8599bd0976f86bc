package realcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/util/wait"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// NodeConfig describes one node.
type NodeConfig struct {
	// Name is the node's name.
	Name string
	// Labels are set by the kubelet when it registers the node.
	Labels map[string]string
	// Images are OCI image tarballs imported into the node's containerd
	// (namespace k8s.io, pinned against image garbage collection) before
	// the kubelet starts.
	Images []string
	// Kubelet is the node's kubelet binary; empty means the one in the
	// cluster's BinDir. A node may run an older kubelet than the control
	// plane, as nodes do while a cluster is upgraded.
	Kubelet string
}

// Node is a running node: a containerd and a kubelet sharing a mount
// namespace of their own.
type Node struct {
	// Name is the node's name.
	Name string
	// IP is the node's InternalIP.
	IP string
	// Dir is the node's directory; Dir/kubelet is its /var/lib/kubelet.
	Dir string
	// Socket is its containerd's socket.
	Socket string

	cfg                 *Cluster
	containerd, kubelet *process
	index               int

	// mu guards kubelet, kubeletUp and crashes: the kubelet is supervised
	// as systemd supervises it on a real node (Restart=always), so a
	// crash is logged and the kubelet started again, and only StopKubelet
	// and stop end it for good.
	mu        sync.Mutex
	kubeletUp bool
	crashes   []string
}

// Containerd's files that must be short paths or live on tmpfs go under
// /run, which is the cluster's own (setupNamespace).
func runDir(name string) string { return filepath.Join("/run/tessera-e2e", name) }

func (c *Cluster) startNode(ctx context.Context, i int, nc NodeConfig) (*Node, error) {
	dir := filepath.Join(c.cfg.Dir, "nodes", nc.Name)
	run := runDir(nc.Name)
	n := &Node{Name: nc.Name, IP: nodeIP(i), Dir: dir, Socket: filepath.Join(run, "containerd.sock"), cfg: c, index: i}
	for _, d := range []string{filepath.Join(dir, "kubelet"), filepath.Join(dir, "log"), filepath.Join(dir, "cni"), filepath.Join(dir, "cdi"), run} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := n.writeContainerdConfig(c.cfg); err != nil {
		return nil, err
	}
	// The node's mount namespace: its own directories on the standard
	// paths the kubelet, the chart's hostPath volumes and containerd use.
	// The shell execs containerd, so the PID started is containerd's.
	script := strings.Join([]string{
		"set -e",
		"mkdir -p /var/lib/kubelet /var/log",
		fmt.Sprintf("mount --bind %s /var/lib/kubelet", filepath.Join(dir, "kubelet")),
		fmt.Sprintf("mount --bind %s /var/log", filepath.Join(dir, "log")),
		"mount -t tmpfs tmpfs /run/netns 2>/dev/null || { mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns; }",
		// The CDI specs the node's runtime reads (/var/run/cdi is one of
		// containerd's default cdi_spec_dirs) are the node's own.
		fmt.Sprintf("mkdir -p /run/cdi && mount --bind %s /run/cdi", filepath.Join(dir, "cdi")),
		fmt.Sprintf("exec %s --config %s", filepath.Join(c.cfg.ContainerdDir, "containerd"), filepath.Join(dir, "containerd.toml")),
	}, "\n")
	var err error
	// containerd finds its shim, and the shim runc, on PATH.
	path := "PATH=" + c.cfg.ContainerdDir + ":" + filepath.Dir(c.cfg.Runc) + ":" + os.Getenv("PATH")
	if n.containerd, err = start(c.cfg.Dir, nc.Name+"-containerd", []string{path},
		"unshare", "--mount", "--propagation", "private", "sh", "-c", script); err != nil {
		return nil, err
	}
	if err := n.waitContainerd(ctx); err != nil {
		return n, err
	}
	images := append([]string{c.cfg.SandboxImageFile}, nc.Images...)
	for _, img := range images {
		if err := n.importImage(ctx, img); err != nil {
			return n, err
		}
	}

	if err := makeCgroupRoot(CgroupRoot + "-" + nc.Name); err != nil {
		return n, err
	}
	cert, key, err := c.pki.issue("kubelet-"+nc.Name, "system:node:"+nc.Name, []string{"system:nodes"})
	if err != nil {
		return n, err
	}
	kc := filepath.Join(dir, "kubelet.kubeconfig")
	if err := c.pki.kubeconfig(kc, "https://127.0.0.1:443", cert, key); err != nil {
		return n, err
	}
	conf := filepath.Join(dir, "kubelet.yaml")
	if err := os.WriteFile(conf, []byte(n.kubeletConfig(c.pki.CAFile())), 0o644); err != nil {
		return n, err
	}
	var labels []string
	for k, v := range nc.Labels {
		labels = append(labels, k+"="+v)
	}
	kubelet := nc.Kubelet
	if kubelet == "" {
		kubelet = filepath.Join(c.cfg.BinDir, "kubelet")
	}
	args := []string{
		"nsenter", "--target", fmt.Sprint(n.containerd.Pid()), "--mount", "--",
		kubelet,
		"--config", conf, "--kubeconfig", kc,
		"--hostname-override", nc.Name, "--node-ip", n.IP,
	}
	if len(labels) > 0 {
		args = append(args, "--node-labels", strings.Join(labels, ","))
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.launchKubeletLocked(nc.Name+"-kubelet", args); err != nil {
		return n, err
	}
	return n, nil
}

// launchKubeletLocked starts the kubelet and supervises it.
func (n *Node) launchKubeletLocked(name string, args []string) error {
	p, err := start(n.cfg.cfg.Dir, name, nil, args...)
	if err != nil {
		return err
	}
	n.kubelet, n.kubeletUp = p, true
	go n.supervise(p)
	return nil
}

// kubeletRestartDelay is how long a crashed kubelet stays down, as
// systemd's RestartSec in the kubelet's unit.
const kubeletRestartDelay = 2 * time.Second

// supervise starts the kubelet again when p, the running kubelet, ends on
// its own.
func (n *Node) supervise(p *process) {
	<-p.done
	n.mu.Lock()
	if !n.kubeletUp || n.kubelet != p {
		n.mu.Unlock()
		return
	}
	why := fmt.Sprintf("%v: %s", p.err, firstPanicLine(p.tail()))
	n.crashes = append(n.crashes, why)
	n.mu.Unlock()
	n.cfg.logf("node %s: the kubelet exited on its own (%s); starting it again in %v, as systemd would", n.Name, why, kubeletRestartDelay)
	time.Sleep(kubeletRestartDelay)
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.kubeletUp || n.kubelet != p {
		return
	}
	if err := n.launchKubeletLocked(p.name, p.cmd.Args); err != nil {
		n.cfg.logf("node %s: restarting the kubelet: %v", n.Name, err)
		n.kubeletUp = false
	}
}

// firstPanicLine picks the panic or fatal error out of a log's tail.
func firstPanicLine(tail string) string {
	for _, line := range strings.Split(tail, "\n") {
		if strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ") {
			return line
		}
	}
	return "no panic in its log"
}

// kubeletProcess is the node's current kubelet process.
func (n *Node) kubeletProcess() *process {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.kubelet
}

// KubeletCrashes lists the times the node's kubelet ended on its own, and
// why.
func (n *Node) KubeletCrashes() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.crashes...)
}

// makeCgroupRoot creates the kubelet's cgroupRoot in every cgroup v1
// hierarchy (the kubelet refuses a root that does not exist); cpuset needs
// its CPUs and memory nodes copied from the parent before anything can
// join it. On a cgroup v2 host the one hierarchy is /sys/fs/cgroup itself.
func makeCgroupRoot(name string) error {
	hierarchies, err := filepath.Glob("/sys/fs/cgroup/*/cgroup.procs")
	if err != nil {
		return err
	}
	dirs := []string{}
	for _, h := range hierarchies {
		if d := filepath.Dir(h); filepath.Base(d) != "unified" {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) == 0 {
		dirs = []string{"/sys/fs/cgroup"}
	}
	for _, d := range dirs {
		dir := filepath.Join(d, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
		if filepath.Base(d) != "cpuset" {
			continue
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(d, f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
				return fmt.Errorf("cgroup %s: %s: %w", dir, f, err)
			}
		}
	}
	return nil
}

func (n *Node) writeContainerdConfig(cfg Config) error {
	run := runDir(n.Name)
	toml := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"

[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %[6]q

[plugins."io.containerd.cri.v1.runtime"]
  # This machine's capability bounding set lacks CAP_SYS_RESOURCE: without
  # this the pause container's oom_score_adj of -998 is refused.
  restrict_oom_score_adj = true
  # CDI is always on in containerd 2.x; these are its default directories,
  # named here because the e2e tests rely on them.
  cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]

[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = %[7]q
  Root = %[8]q

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = [%[9]q]
  conf_dir = %[10]q

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`, filepath.Join(n.Dir, "containerd"), filepath.Join(run, "state"), n.Socket, n.Socket+".ttrpc",
		filepath.Join(n.Dir, "opt"), cfg.SandboxImage, cfg.Runc, filepath.Join(run, "runc"),
		cfg.CNIBinDir, filepath.Join(n.Dir, "cni"))
	if err := os.WriteFile(filepath.Join(n.Dir, "containerd.toml"), []byte(toml), 0o644); err != nil {
		return err
	}
	// One bridge and subnet per node. The bridge is the pods' default
	// gateway, which is how they reach the API server at ServiceIP.
	cni := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "tessera-e2e-%[1]s",
  "plugins": [{
    "type": "bridge",
    "bridge": "tessera-br%[2]d",
    "isGateway": true,
    "isDefaultGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.%[2]d.0/24"}]]}
  }]
}
`, n.Name, n.index)
	return os.WriteFile(filepath.Join(n.Dir, "cni", "10-bridge.conflist"), []byte(cni), 0o644)
}

func (n *Node) kubeletConfig(caFile string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine runs cgroup v1, which the kubelet refuses from v1.35 on
# unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %[1]s-%[2]s
failSwapOn: false
oomScoreAdj: 0
# Keep the kubelet out of the iptables of the namespace it shares.
makeIPTablesUtilChains: false
containerRuntimeEndpoint: unix://%[3]s
address: %[4]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %[5]d
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[6]s}
authorization:
  mode: Webhook
# The machine's disk and memory are shared with the build: do not evict
# or collect images because of them.
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
volumePluginDir: /var/lib/kubelet/volume-plugins
podLogsDir: /var/log/pods
resolvConf: /etc/resolv.conf
`, CgroupRoot, n.Name, n.Socket, n.IP, 10248+n.index, caFile)
}

func (n *Node) waitContainerd(ctx context.Context) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if done, err := n.containerd.exited(); done {
			return false, fmt.Errorf("containerd exited (%v)", err)
		}
		_, err := os.Stat(n.Socket)
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("node %s: %w\n%s", n.Name, err, n.containerd.tail())
	}
	return nil
}

// ctr runs containerd's client against the node's containerd.
func (n *Node) ctr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(n.cfg.cfg.ContainerdDir, "ctr"), append([]string{"--address", n.Socket, "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("node %s: ctr %s: %v: %s", n.Name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// importImage imports an OCI tarball for the node's platform and pins
// every image it names, so that image garbage collection keeps them (they
// cannot be pulled again).
func (n *Node) importImage(ctx context.Context, file string) error {
	out, err := n.ctr(ctx, "images", "import", file)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		// "unpacking <name> (sha256:...)...done"
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "unpacking" {
			if _, err := n.ctr(ctx, "images", "label", f[1], "io.cri-containerd.pinned=pinned"); err != nil {
				return err
			}
		}
	}
	return nil
}

// stop stops the kubelet, then removes every pod sandbox through the CRI
// (which stops the containers, their shims and network namespaces), then
// stops containerd.
func (n *Node) stop(c *Cluster) {
	n.mu.Lock()
	n.kubeletUp = false
	kubelet := n.kubelet
	n.mu.Unlock()
	if kubelet != nil {
		if err := kubelet.stop(20 * time.Second); err != nil {
			c.logf("%v", err)
		}
	}
	if n.containerd == nil {
		return
	}
	if done, _ := n.containerd.exited(); !done {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if err := removeSandboxes(ctx, n.Socket); err != nil {
			c.logf("node %s: removing pod sandboxes: %v", n.Name, err)
		}
		cancel()
	}
	if err := n.containerd.stop(20 * time.Second); err != nil {
		c.logf("%v", err)
	}
}

// StopKubelet stops the node's kubelet (its containers keep running), for
// tests of a kubelet restart.
func (n *Node) StopKubelet() error {
	n.mu.Lock()
	n.kubeletUp = false
	p := n.kubelet
	n.mu.Unlock()
	return p.stop(30 * time.Second)
}

// StartKubelet starts the kubelet again with the arguments it had.
func (n *Node) StartKubelet() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if done, _ := n.kubelet.exited(); !done {
		return fmt.Errorf("node %s: the kubelet is running", n.Name)
	}
	return n.launchKubeletLocked(n.kubelet.name, n.kubelet.cmd.Args)
}

func removeSandboxes(ctx context.Context, socket string) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	list, err := rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return err
	}
	for _, sb := range list.Items {
		if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			return fmt.Errorf("stopping sandbox of %s/%s: %w", sb.Metadata.Namespace, sb.Metadata.Name, err)
		}
		if _, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			return fmt.Errorf("removing sandbox of %s/%s: %w", sb.Metadata.Namespace, sb.Metadata.Name, err)
		}
	}
	return nil
}
