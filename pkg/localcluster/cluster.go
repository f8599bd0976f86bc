package localcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	kubeapiservertesting "k8s.io/kubernetes/cmd/kube-apiserver/app/testing"
	"k8s.io/kubernetes/test/utils/ktesting"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/manifests"
	"github.com/tessera-gpu/tessera/pkg/generated/clientset/versioned"
)

// Options configure a local control plane.
type Options struct {
	// Dir holds etcd's data, the apiserver's certificates and the
	// kubeconfig. It must exist.
	Dir string
	// TB is the test handle the apiserver reports to. Leave it nil in a
	// program; Logf then receives its messages.
	TB ktesting.TB
	// Logf receives progress messages when TB is nil.
	Logf func(format string, args ...any)
}

// Cluster is a running local control plane with the GPUNode CRD installed.
type Cluster struct {
	// Config is an admin client configuration.
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file for Config, for kubectl
	// and for the scheduler.
	Kubeconfig string
	// Client is a Kubernetes client.
	Client kubernetes.Interface
	// GPU is a client for Tessera's API.
	GPU versioned.Interface

	stop func()
}

// Start starts etcd and kube-apiserver, writes a kubeconfig and installs the
// GPUNode CRD from the shipped manifest.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	tb := opts.TB
	var own *processTB
	if tb == nil {
		logf := opts.Logf
		if logf == nil {
			logf = func(string, ...any) {}
		}
		own = &processTB{name: "localcluster", dir: opts.Dir, logf: logf}
		tb = own
		defer func() {
			if r := recover(); r != nil {
				f, ok := r.(fatal)
				if !ok {
					panic(r)
				}
				own.runCleanups()
				c, err = nil, fmt.Errorf("starting the control plane: %s", f.msg)
			}
		}()
	}

	etcdURL, closeEtcd, err := startEtcd(filepath.Join(opts.Dir, "etcd"))
	if err != nil {
		return nil, err
	}
	var once sync.Once
	stopEtcd := func() { once.Do(closeEtcd) }
	if own != nil {
		// Fatal unwinds through the recover above, which runs cleanups.
		own.Cleanup(stopEtcd)
	}
	storage := storagebackend.NewDefaultConfig("/registry", nil)
	storage.Transport.ServerList = []string{etcdURL}
	srv, err := kubeapiservertesting.StartTestServer(tb, &kubeapiservertesting.TestServerInstanceOptions{DisableInvariantChecks: true},
		[]string{
			"--endpoint-reconciler-type=none",
			// No node lifecycle or service-account controllers run here:
			// their admission plugins would taint every node not-ready
			// and reject every pod without a token.
			"--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
			// Enforce RBAC, so that the shipped roles are tested for real.
			"--authorization-mode=RBAC",
		}, storage)
	if err != nil {
		stopEtcd()
		if own != nil {
			own.runCleanups()
		}
		return nil, fmt.Errorf("starting kube-apiserver: %w", err)
	}
	c = &Cluster{Config: rest.CopyConfig(srv.ClientConfig)}
	c.stop = func() {
		srv.TearDownFn()
		if own != nil {
			own.runCleanups()
		}
		stopEtcd()
	}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	c.Config.QPS, c.Config.Burst = 1000, 2000
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, err
	}
	gpuCfg := rest.CopyConfig(c.Config)
	gpuCfg.ContentType, gpuCfg.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON
	if c.GPU, err = versioned.NewForConfig(gpuCfg); err != nil {
		return nil, err
	}
	c.Kubeconfig = filepath.Join(opts.Dir, "kubeconfig")
	if err := writeKubeconfig(c.Config, c.Kubeconfig); err != nil {
		return nil, err
	}
	if err := InstallCRD(ctx, c.Config); err != nil {
		return nil, err
	}
	return c, nil
}

// Stop tears the control plane down.
func (c *Cluster) Stop() {
	if c.stop != nil {
		c.stop()
		c.stop = nil
	}
}

func writeKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{
		Server: cfg.Host, CertificateAuthorityData: cfg.CAData, TLSServerName: cfg.ServerName,
	}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "admin"}
	kc.CurrentContext = "local"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	return os.Chmod(path, 0o600)
}

// WriteKubeconfigAs writes a kubeconfig for the cluster that acts as user,
// a member of groups, through impersonation by the admin: a component run
// with it has exactly the permissions its RBAC gives it, e.g.
// "system:serviceaccount:tessera-system:tessera-scheduler" in the groups
// "system:serviceaccounts", "system:serviceaccounts:tessera-system" and
// "system:authenticated".
func (c *Cluster) WriteKubeconfigAs(path, user string, groups ...string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{
		Server: c.Config.Host, CertificateAuthorityData: c.Config.CAData, TLSServerName: c.Config.ServerName,
	}
	kc.AuthInfos["user"] = &clientcmdapi.AuthInfo{Token: c.Config.BearerToken, Impersonate: user, ImpersonateGroups: groups}
	kc.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "user"}
	kc.CurrentContext = "local"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	return os.Chmod(path, 0o600)
}

// InstallCRD creates the GPUNode CRD from manifests/install and waits until the
// apiserver serves it.
func InstallCRD(ctx context.Context, cfg *rest.Config) error {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(manifests.GPUNodeCRD, crd); err != nil {
		return fmt.Errorf("reading the GPUNode CRD manifest: %w", err)
	}
	client, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if _, err := client.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the GPUNode CRD: %w", err)
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range got.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
}
