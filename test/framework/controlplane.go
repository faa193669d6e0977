package framework

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

const (
	// DefaultNodes is how many fake nodes Start creates unless told otherwise.
	DefaultNodes = 3
	// DefaultPodsPerNode is the allocatable pod count of a fake node, the
	// kubelet's default --max-pods.
	DefaultPodsPerNode = 110

	// FakeNodeAnnotation marks the nodes kwok plays the kubelet for; nodes
	// without it are left alone.
	FakeNodeAnnotation      = "kwok.x-k8s.io/node"
	FakeNodeAnnotationValue = "fake"

	workDirPrefix = "runnerpool-controlplane-"
	stopGrace     = 10 * time.Second
	readyTimeout  = time.Minute
	pollInterval  = 50 * time.Millisecond
)

var (
	// DefaultNodeCPU and DefaultNodeMemory size a fake node unless told otherwise:
	// room for several runner pods, small enough that an oversized pod is easy.
	DefaultNodeCPU    = resource.MustParse("16")
	DefaultNodeMemory = resource.MustParse("64Gi")
)

// stageFiles are kwok's "fast" stages: nodes become Ready at once, pods on them
// Running and Ready at once (native sidecars included), deleted pods go at once,
// pods owned by a Job complete.
//
//go:embed stages/*.yaml
var stageFiles embed.FS

// Options configures Start. The zero value is a working setup.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager, kube-scheduler
	// and kwok. Empty: see ResolveBinDir.
	BinDir string
	// CRDDirectoryPaths are files or directories of CustomResourceDefinitions to
	// install before Start returns.
	CRDDirectoryPaths []string
	// Nodes is how many fake nodes to create: 0 means DefaultNodes, negative
	// means none.
	Nodes int
	// NodeCPU and NodeMemory are each fake node's capacity and allocatable;
	// zero means DefaultNodeCPU and DefaultNodeMemory.
	NodeCPU    resource.Quantity
	NodeMemory resource.Quantity
	// LogDir receives one log file per program (etcd.log, kube-apiserver.log,
	// ...) and keeps them after Stop. Empty: logs live in the work directory and
	// go with it.
	LogDir string
	// Logger reports the phases of Start and how long each took. The zero value
	// discards.
	Logger logr.Logger
	// RealNode, when set, adds one node run by a real kubelet and containerd
	// (docs/adr/0014-real-node.md), and makes the control plane serve real pods: the
	// ServiceAccount admission plugin mounts their tokens, the controller manager creates
	// ServiceAccounts and publishes kube-root-ca.crt, and the API server's certificate
	// names the kubernetes Service's ClusterIP. It needs root and `make node-prereqs`.
	RealNode *RealNodeOptions
}

// ControlPlane is a running local control plane.
type ControlPlane struct {
	// Config reaches the API server as a cluster administrator (system:masters).
	Config *rest.Config
	// KubeconfigPath is a kubeconfig file with the same identity, for kubectl and
	// for programs started by tests (the manager, bbsim).
	KubeconfigPath string

	clientset  kubernetes.Interface
	env        *envtest.Environment
	workDir    string
	logDir     string
	components []*component
	nodeSeq    atomic.Int64
	realNode   *RealNode
	// realNodeLock is held from Start until the real node takes it over (see lockRealNode).
	realNodeLock io.Closer
	// rootCAFile is the CA of the API server's certificate, when this package made it.
	rootCAFile string

	stopOnce sync.Once
	stopErr  error
}

// Start runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
// kwok on loopback, installs the CRDs, creates the fake nodes and waits until they
// are Ready and schedulable. ctx bounds the waits of the start only; the control
// plane runs until Stop. On failure the error ends with the last lines of every
// program's log.
func Start(ctx context.Context, opts Options) (_ *ControlPlane, err error) {
	binDir, err := ResolveBinDir(opts.BinDir)
	if err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	reapAbandoned()

	workDir, err := os.MkdirTemp("", workDirPrefix)
	if err != nil {
		return nil, fmt.Errorf("start control plane: create work directory: %w", err)
	}
	cp := &ControlPlane{workDir: workDir, logDir: opts.LogDir}
	defer func() {
		if err != nil {
			// The logs may live in the work directory, which Stop removes.
			err = fmt.Errorf("%w\n%s", err, cp.logTails(10))
			_ = cp.Stop()
		}
	}()
	if err := writeOwner(workDir); err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	if cp.logDir == "" {
		cp.logDir = filepath.Join(workDir, "logs")
	}
	if err := os.MkdirAll(cp.logDir, 0o755); err != nil {
		return nil, fmt.Errorf("start control plane: create log directory: %w", err)
	}

	log := opts.Logger
	begin := time.Now()
	if opts.RealNode != nil {
		// Fail before anything starts when this machine cannot run it, and wait for another
		// test's real node to go before starting anything either.
		if _, err := checkRealNodeHost(binDir); err != nil {
			return nil, fmt.Errorf("start control plane: %w", err)
		}
		if cp.realNodeLock, err = lockRealNode(ctx); err != nil {
			return nil, fmt.Errorf("start control plane: %w", err)
		}
	}
	if err := cp.startAPIServer(binDir, opts.CRDDirectoryPaths, opts.RealNode != nil); err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	log.Info("etcd and kube-apiserver ready", "elapsed", time.Since(begin).Round(time.Millisecond), "host", cp.Config.Host)
	if err := cp.startControllers(ctx, binDir); err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	log.Info("kube-controller-manager, kube-scheduler and kwok started", "elapsed", time.Since(begin).Round(time.Millisecond))

	nodes := opts.Nodes
	if nodes == 0 {
		nodes = DefaultNodes
	}
	if nodes > 0 {
		cpu, memory := opts.NodeCPU, opts.NodeMemory
		if cpu.IsZero() {
			cpu = DefaultNodeCPU
		}
		if memory.IsZero() {
			memory = DefaultNodeMemory
		}
		if _, err := cp.CreateNodes(ctx, nodes, cpu, memory); err != nil {
			return nil, fmt.Errorf("start control plane: %w", err)
		}
		log.Info("fake nodes ready", "nodes", nodes, "cpu", cpu.String(), "memory", memory.String(), "elapsed", time.Since(begin).Round(time.Millisecond))
	}
	if opts.RealNode != nil {
		if cp.realNode, err = cp.startRealNode(ctx, binDir, *opts.RealNode); err != nil {
			return nil, fmt.Errorf("start control plane: %w", err)
		}
		log.Info("real node ready", "node", cp.realNode.Name(), "ip", cp.realNode.IP().String(), "elapsed", time.Since(begin).Round(time.Millisecond))
	}
	return cp, nil
}

// startAPIServer runs etcd and kube-apiserver through envtest and writes the
// admin kubeconfig. realPods prepares it for pods that really run (see Options.RealNode).
func (cp *ControlPlane) startAPIServer(binDir string, crdPaths []string, realPods bool) error {
	logs := map[string]*os.File{}
	for _, name := range []string{"etcd", "kube-apiserver"} {
		f, err := os.OpenFile(filepath.Join(cp.logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("open %s log: %w", name, err)
		}
		// The programs hold their own descriptors once started.
		defer f.Close()
		logs[name] = f
	}
	// Their directories sit in the work directory so that the command lines of
	// both programs name it (see reapAbandoned).
	cp.env = &envtest.Environment{
		ControlPlane: envtest.ControlPlane{
			Etcd: &envtest.Etcd{
				Path:    filepath.Join(binDir, "etcd"),
				DataDir: filepath.Join(cp.workDir, "etcd"),
				Out:     logs["etcd"],
				Err:     logs["etcd"],
			},
			APIServer: &envtest.APIServer{
				Path:    filepath.Join(binDir, "kube-apiserver"),
				CertDir: filepath.Join(cp.workDir, "kube-apiserver"),
				Out:     logs["kube-apiserver"],
				Err:     logs["kube-apiserver"],
			},
			KubectlPath: filepath.Join(binDir, "kubectl"),
		},
		BinaryAssetsDirectory:   binDir,
		CRDDirectoryPaths:       crdPaths,
		ErrorIfCRDPathMissing:   len(crdPaths) > 0,
		ControlPlaneStopTimeout: stopGrace,
	}
	for _, dir := range []string{cp.env.ControlPlane.Etcd.DataDir, cp.env.ControlPlane.APIServer.CertDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}
	if realPods {
		// A real pod's client dials the kubernetes Service's ClusterIP and checks the
		// certificate against it and kube-root-ca.crt: envtest's certificate names
		// loopback only, so this package makes the CA and certificate, which envtest then
		// uses as they are.
		apiServer := cp.env.ControlPlane.APIServer
		ca, err := writeAPIServerCerts(apiServer.CertDir)
		if err != nil {
			return err
		}
		apiServer.SecureServing.CA = ca
		cp.rootCAFile = filepath.Join(apiServer.CertDir, rootCAFile)
		// envtest leaves ServiceAccount admission out, as no controller makes the default
		// accounts; here one does, and the plugin is what mounts a pod's token.
		apiServer.Configure().Disable("disable-admission-plugins")
	}
	config, err := cp.env.Start()
	if err != nil {
		return fmt.Errorf("start etcd and kube-apiserver: %w", err)
	}
	cp.Config = config
	cp.clientset, err = kubernetes.NewForConfig(config)
	if err != nil {
		return fmt.Errorf("create clientset: %w", err)
	}
	cp.KubeconfigPath = filepath.Join(cp.workDir, "kubeconfig")
	if err := os.WriteFile(cp.KubeconfigPath, cp.env.KubeConfig, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// startControllers runs kube-controller-manager, kube-scheduler and kwok against
// the API server and waits until the scheduler is ready.
func (cp *ControlPlane) startControllers(ctx context.Context, binDir string) error {
	kubeconfig := "--kubeconfig=" + cp.KubeconfigPath

	// Only these controllers: the garbage collector, so owner references are
	// honoured as in a real cluster; the node lifecycle controller, which
	// removes the node.kubernetes.io/not-ready taint the API server puts on new
	// nodes (nothing would schedule otherwise); the disruption controller, which
	// keeps PodDisruptionBudget status that the Eviction API checks (without it
	// every eviction of a covered pod is refused, whatever the budget says); the
	// persistent volume binder, which binds claims to the volumes a test creates,
	// as in a cluster with statically provisioned volumes (there is no
	// provisioner); and the claim and volume protection controllers, which lift
	// the finalizers the API server's admission puts on claims and volumes once
	// no pod uses them (deleted claims would stay Terminating for ever
	// otherwise). kwok's fast stages send no heartbeats, so the grace period is
	// long enough that nodes are not marked unknown during a test; should a long
	// demo outlast it, kwok's node-initialize stage makes the node Ready again at
	// once. secure-port=0: no serving port, so no delegated authentication is
	// needed either.
	controllers := "garbage-collector-controller,node-lifecycle-controller,disruption-controller," +
		"persistentvolume-binder-controller,persistentvolumeclaim-protection-controller,persistentvolume-protection-controller"
	args := []string{kubeconfig, "--leader-elect=false", "--secure-port=0", "--node-monitor-grace-period=1h"}
	if cp.rootCAFile != "" {
		// Real pods need their namespace's default ServiceAccount and kube-root-ca.crt,
		// which their token volume projects.
		controllers += ",serviceaccount-controller,root-ca-certificate-publisher-controller"
		args = append(args, "--root-ca-file="+cp.rootCAFile)
	}
	controllerManager, err := startComponent("kube-controller-manager", filepath.Join(binDir, "kube-controller-manager"),
		append(args, "--controllers="+controllers), nil, cp.logDir)
	if err != nil {
		return err
	}
	cp.components = append(cp.components, controllerManager)

	// The scheduler serves on a loopback port only so that Start can wait for
	// its /readyz; /readyz is readable without credentials.
	schedulerPort, err := freeLoopbackPort()
	if err != nil {
		return err
	}
	scheduler, err := startComponent("kube-scheduler", filepath.Join(binDir, "kube-scheduler"), []string{
		kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(schedulerPort),
	}, nil, cp.logDir)
	if err != nil {
		return err
	}
	cp.components = append(cp.components, scheduler)

	kwokConfig, err := cp.writeKwokConfig()
	if err != nil {
		return err
	}
	// KWOK_WORKDIR keeps kwok from reading a developer's ~/.kwok/kwok.yaml. No
	// --server-address and no --node-port: kwok serves nothing. Node and pod IPs
	// only appear in statuses; loopback for nodes keeps any client that follows
	// them (kubectl logs) on this machine.
	kwok, err := startComponent("kwok", filepath.Join(binDir, "kwok"), []string{
		kubeconfig,
		"--config=" + kwokConfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=" + FakeNodeAnnotation + "=" + FakeNodeAnnotationValue,
		"--node-ip=127.0.0.1",
		"--cidr=10.128.0.0/16",
	}, []string{"KWOK_WORKDIR=" + filepath.Join(cp.workDir, "kwok")}, cp.logDir)
	if err != nil {
		return err
	}
	cp.components = append(cp.components, kwok)

	return cp.waitFor(ctx, "kube-scheduler to be ready", func(context.Context) (bool, error) {
		return httpReady(fmt.Sprintf("https://127.0.0.1:%d/readyz", schedulerPort)), nil
	})
}

// writeKwokConfig joins the embedded stages into one kwok configuration file.
func (cp *ControlPlane) writeKwokConfig() (string, error) {
	entries, err := stageFiles.ReadDir("stages")
	if err != nil {
		return "", fmt.Errorf("read kwok stages: %w", err)
	}
	var docs []string
	for _, entry := range entries {
		data, err := stageFiles.ReadFile("stages/" + entry.Name())
		if err != nil {
			return "", fmt.Errorf("read kwok stage %s: %w", entry.Name(), err)
		}
		docs = append(docs, string(data))
	}
	path := filepath.Join(cp.workDir, "kwok.yaml")
	if err := os.WriteFile(path, []byte(strings.Join(docs, "\n---\n")), 0o644); err != nil {
		return "", fmt.Errorf("write kwok config: %w", err)
	}
	return path, nil
}

// waitFor polls condition until it holds, failing early when a program died, when
// ctx ends, or after readyTimeout.
func (cp *ControlPlane) waitFor(ctx context.Context, what string, condition func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		done, err := condition(ctx)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if done {
			return nil
		}
		if err := diagnoseAll(cp.components); err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-ticker.C:
		}
	}
}

// Stop ends every program (children's process groups included), and removes the
// work directory. It is safe to call more than once.
func (cp *ControlPlane) Stop() error {
	cp.stopOnce.Do(func() {
		var errs []error
		// The real node first: its kubelet ends its pods through the API server.
		if cp.realNode != nil {
			if err := cp.realNode.Stop(); err != nil {
				errs = append(errs, err)
			}
		}
		if cp.realNodeLock != nil {
			_ = cp.realNodeLock.Close()
		}
		// Clients of the API server first, so they do not log a storm of errors
		// while it goes away.
		var wg sync.WaitGroup
		for _, c := range cp.components {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.stop(stopGrace)
			}()
		}
		wg.Wait()
		if cp.env != nil {
			if err := cp.env.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stop etcd and kube-apiserver: %w", err))
			}
		}
		// Anything still naming the work directory is a leftover of this control
		// plane (an apiserver that ignored SIGTERM, say).
		killProcessesUsing(cp.workDir)
		if err := os.RemoveAll(cp.workDir); err != nil {
			errs = append(errs, fmt.Errorf("remove work directory: %w", err))
		}
		cp.stopErr = errors.Join(errs...)
	})
	return cp.stopErr
}

// logTails returns the last lines of every program's log.
func (cp *ControlPlane) logTails(lines int) string {
	logs, _ := filepath.Glob(filepath.Join(cp.logDir, "*.log"))
	var b strings.Builder
	for _, path := range logs {
		fmt.Fprintf(&b, "--- last lines of %s:\n%s\n", filepath.Base(path), tailFile(path, lines))
	}
	return b.String()
}

// LogDir is where the programs' logs are.
func (cp *ControlPlane) LogDir() string {
	return cp.logDir
}

// CheckHealth reports a program of the control plane that stopped on its own, with
// the end of its log. Tests can call it when something takes suspiciously long.
func (cp *ControlPlane) CheckHealth() error {
	return diagnoseAll(cp.components)
}

func freeLoopbackPort() (int, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free loopback port: %w", err)
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).Port, nil
}

var healthClient = &http.Client{
	Timeout: time.Second,
	Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback health probe
		DisableKeepAlives: true,
	},
}

// httpReady reports whether a loopback health endpoint answers 200. The
// certificate is the program's own self-signed one, so it is not verified.
func httpReady(url string) bool {
	resp, err := healthClient.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
