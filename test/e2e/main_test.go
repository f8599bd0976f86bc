//go:build e2e

// Package e2e tests Tessera as users run it: the images `make images`
// builds, installed with the chart as the README says, on a real cluster of
// real kubelets and containerd (test/e2e/realcluster). `make e2e` builds
// everything and runs these tests through hack/e2e.sh, which gives the
// cluster namespaces of its own; run them no other way.
package e2e

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/test/e2e/realcluster"
)

var (
	workDir        = flag.String("e2e.dir", "", "directory for the cluster's files (required)")
	binDir         = flag.String("e2e.bin-dir", "", "directory with kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl (required)")
	etcdBin        = flag.String("e2e.etcd", "", "etcd binary (required)")
	helmBin        = flag.String("e2e.helm", "", "helm binary (required)")
	kubectlTessera = flag.String("e2e.kubectl-tessera", "", "kubectl-tessera binary (required)")
	imagesDir      = flag.String("e2e.images", "", "directory with tessera-scheduler.tar, tessera-device-plugin.tar and sleeper.tar (required)")
	repo           = flag.String("e2e.repo", "", "the repository's root: README.md, the chart, the examples (required)")
	containerdDir  = flag.String("e2e.containerd-dir", "", "directory with containerd 2.x's containerd, ctr and containerd-shim-runc-v2 (required)")
	gpuKubelet     = flag.String("e2e.gpu-kubelet", "", "the GPU node's kubelet binary, e.g. an older minor's (default: the one in -e2e.bin-dir)")
)

const (
	// gpuNode runs the device plugin in fake mode (a DGX H100: 8 GPUs);
	// cpuNode has no GPUs and runs what needs no GPU.
	gpuNode = "gpu-0"
	cpuNode = "cpu-0"
	// sleeperImage is test/e2e/sleeper, pod sandbox and workload alike.
	sleeperImage = "tessera.local/e2e/sleeper:latest"
	namespace    = "tessera-system"
)

// cluster is the cluster every test runs against.
var cluster *realcluster.Cluster

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	for name, v := range map[string]string{"e2e.dir": *workDir, "e2e.bin-dir": *binDir, "e2e.etcd": *etcdBin, "e2e.helm": *helmBin,
		"e2e.kubectl-tessera": *kubectlTessera, "e2e.images": *imagesDir, "e2e.repo": *repo, "e2e.containerd-dir": *containerdDir} {
		if v == "" {
			fmt.Fprintf(os.Stderr, "e2e: -%s is required; run the tests with make e2e\n", name)
			return 2
		}
	}
	logf := func(format string, args ...any) {
		fmt.Printf("%s e2e: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	images := []string{
		filepath.Join(*imagesDir, "tessera-scheduler.tar"),
		filepath.Join(*imagesDir, "tessera-device-plugin.tar"),
		filepath.Join(*imagesDir, "sleeper.tar"),
	}
	// The docs' commands find kubectl, kubectl tessera and helm on PATH,
	// as a user's shell would.
	os.Setenv("PATH", *binDir+":"+filepath.Dir(*kubectlTessera)+":"+filepath.Dir(*helmBin)+":"+os.Getenv("PATH"))
	runc, err := exec.LookPath("runc")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: runc must be installed (make e2e-deps): %v\n", err)
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	began := time.Now()
	c, err := realcluster.Up(ctx, realcluster.Config{
		Dir:              *workDir,
		BinDir:           *binDir,
		Etcd:             *etcdBin,
		ContainerdDir:    *containerdDir,
		Runc:             runc,
		CNIBinDir:        "/usr/lib/cni",
		SandboxImage:     sleeperImage,
		SandboxImageFile: filepath.Join(*imagesDir, "sleeper.tar"),
		Nodes: []realcluster.NodeConfig{
			{Name: gpuNode, Images: images, Kubelet: *gpuKubelet},
			{Name: cpuNode, Images: images},
		},
		Logf: logf,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: starting the cluster: %v\n", err)
		return 1
	}
	cluster = c
	// On SIGINT or SIGTERM stop the cluster in order before exiting; the
	// PID namespace would end it anyway, but not its pods' sandboxes
	// cleanly.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		logf("%v: stopping the cluster", s)
		c.Down()
		os.Exit(130)
	}()
	defer func() {
		began := time.Now()
		c.Down()
		logf("cluster stopped in %v", time.Since(began).Round(time.Millisecond))
	}()

	if err := installAsTheREADMESays(ctx, logf); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: installing Tessera: %v\n", err)
		return 1
	}
	logf("cluster up and Tessera installed %v after start", time.Since(began).Round(time.Millisecond))
	if nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		for _, n := range nodes.Items {
			logf("node %s: kubelet %s, %s", n.Name, n.Status.NodeInfo.KubeletVersion, n.Status.NodeInfo.ContainerRuntimeVersion)
		}
	}
	code := m.Run()
	// A kubelet crash is the kubelet's own (the tests check that nothing
	// is lost when it comes back), but it must not go unnoticed.
	for _, n := range c.Nodes {
		for _, why := range n.KubeletCrashes() {
			logf("node %s: the kubelet crashed during the run and was restarted: %s", n.Name, why)
		}
	}
	return code
}

// shell runs one command line from the docs (no pipes or expansions)
// with the cluster's kubectl, kubectl-tessera and helm on PATH, and returns
// its standard output; the error carries standard error.
func shell(ctx context.Context, line string) (string, error) {
	args := strings.Fields(line)
	env := append(os.Environ(),
		"KUBECONFIG="+cluster.Kubeconfig,
		// helm keeps its caches out of the invoking user's home.
		"HELM_CACHE_HOME="+filepath.Join(*workDir, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(*workDir, "helm", "config"),
		"HELM_DATA_HOME="+filepath.Join(*workDir, "helm", "data"),
	)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = *repo
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v\n%s%s", line, err, out, stderr.String())
	}
	return string(out), nil
}

// readmeBlock returns the command lines of the first ```sh block after the
// heading, and the comment lines separately.
func readmeBlock(heading, after string) (cmds, comments []string, err error) {
	f, err := os.Open(filepath.Join(*repo, "README.md"))
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	inSection, seenAfter, inBlock := false, after == "", false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			if inSection {
				return nil, nil, fmt.Errorf("README.md: no sh block in %q", heading)
			}
			inSection = line == "## "+heading
		case !inSection:
		case !seenAfter:
			seenAfter = strings.Contains(line, after)
		case line == "```sh":
			inBlock = true
		case inBlock && line == "```":
			return cmds, comments, nil
		case inBlock:
			cmd, comment, _ := strings.Cut(line, "#")
			if cmd = strings.TrimSpace(cmd); cmd != "" {
				cmds = append(cmds, cmd)
			}
			if comment = strings.TrimSpace(comment); comment != "" {
				comments = append(comments, comment)
			}
		}
	}
	return nil, nil, fmt.Errorf("README.md: section %q (after %q) not found", heading, after)
}

var fakeFlag = regexp.MustCompile(`(--set devicePlugin\.fakeMode=\S+)`)

// installAsTheREADMESays runs the README's install commands, with <gpu-node>
// being the GPU node and, as the README's comment says for nodes without
// GPUs, fake mode added to helm install; then its "Check the install"
// commands.
func installAsTheREADMESays(ctx context.Context, logf func(string, ...any)) error {
	return install(ctx, logf, true)
}

// install runs the README's install commands; label false skips labelling
// the node, which a user installing again has done already (kubectl label
// refuses to set a label that is there).
func install(ctx context.Context, logf func(string, ...any), label bool) error {
	cmds, comments, err := readmeBlock("Install", "")
	if err != nil {
		return err
	}
	var fake string
	for _, c := range comments {
		if m := fakeFlag.FindString(c); m != "" {
			fake = m
		}
	}
	if fake == "" {
		return fmt.Errorf("README.md's install block does not say how to fake GPUs (a comment with --set devicePlugin.fakeMode=...)")
	}
	for _, line := range cmds {
		line = strings.ReplaceAll(line, "<gpu-node>", gpuNode)
		if !label && strings.HasPrefix(line, "kubectl label") {
			continue
		}
		if strings.HasPrefix(line, "helm install") {
			line += " " + fake + " --wait --timeout 5m"
		}
		logf("README: %s", line)
		if _, err := shell(ctx, line); err != nil {
			return err
		}
	}
	checks, _, err := readmeBlock("Install", "Check the install")
	if err != nil {
		return err
	}
	for _, line := range checks {
		logf("README: %s", line)
		out, err := shell(ctx, line)
		if err != nil {
			return err
		}
		fmt.Print(out)
	}
	return nil
}
