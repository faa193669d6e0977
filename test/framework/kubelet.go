package framework

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
)

// KubeletOptions configure StartKubelet.
type KubeletOptions struct {
	// NodeName is the node the kubelet registers and serves.
	NodeName string
	// Programs maps an image, without tag or digest, to the local program that stands for
	// it: the container runs that program with its args (after its command's first word,
	// when it has a command).
	Programs map[string]string
	// Logger reports what the kubelet does with pods; the zero value discards.
	Logger logr.Logger
}

// Kubelet runs the pods bound to one node as local processes, for the few pods a test needs
// to really run (the operator installed by its chart, a hook Job) on a machine without a
// container runtime. kwok plays the kubelet of the other nodes, where nothing runs.
//
// A pod's containers start side by side, each as its image's program with the container's
// args and env (values, $(VAR) references, downward API fields, Secret and ConfigMap keys),
// talking to the API server as the pod's ServiceAccount: the kubeconfig in $KUBECONFIG
// impersonates it, so RBAC judges the program as it would the pod. Each pod has its own
// network namespace in a cluster; here a declared containerPort gets a free loopback port,
// and an argument naming it (`--x-address=:8080`) is rewritten to that port (see Ports).
// The pod turns Running when its containers start and Ready when their HTTP readiness probes
// answer; it Succeeds or Fails when they exit, unless its restart policy is Always, which
// restarts them. Deleting the pod stops the processes (SIGTERM, then SIGKILL after the grace
// period, at most 10s) and then removes it, as the kubelet does. Volumes, init containers,
// security contexts and resources are not emulated.
//
// The node carries no kubernetes.io/os or kubernetes.io/arch label, so the operator's runner
// pods, which select both, never land on it.
type Kubelet struct {
	cp       *ControlPlane
	opts     KubeletOptions
	log      logr.Logger
	workDir  string
	logDir   string
	cancel   context.CancelFunc
	informer cache.SharedIndexInformer
	wg       sync.WaitGroup

	mu      sync.Mutex
	pods    map[types.UID]*podRun
	started []string
}

// podRun is one pod's processes and their state.
type podRun struct {
	pod    *corev1.Pod
	dir    string
	ports  map[string]int // containerPort name (or number) -> loopback port
	cancel context.CancelFunc
	// gone is set when the pod object disappeared: the processes stop and nothing is
	// written back.
	gone bool
	done chan struct{}
}

// kubeletStopGrace caps a pod's termination grace period, so a test never waits long.
const kubeletStopGrace = 10 * time.Second

// StartKubelet registers a node that nothing but the pods' programs run on, waits until it
// is schedulable and starts serving its pods. Stop ends every process it started; the
// control plane's Stop does not.
func (cp *ControlPlane) StartKubelet(ctx context.Context, opts KubeletOptions) (*Kubelet, error) {
	if opts.NodeName == "" {
		return nil, errors.New("start kubelet: no node name")
	}
	workDir, err := os.MkdirTemp(cp.workDir, "kubelet-")
	if err != nil {
		return nil, fmt.Errorf("start kubelet: %w", err)
	}
	k := &Kubelet{
		cp: cp, opts: opts, log: opts.Logger, workDir: workDir,
		logDir: filepath.Join(cp.logDir, "kubelet-"+opts.NodeName),
		pods:   map[types.UID]*podRun{},
	}
	if k.log.GetSink() == nil {
		k.log = logr.Discard()
	}
	if err := os.MkdirAll(k.logDir, 0o755); err != nil {
		return nil, fmt.Errorf("start kubelet: %w", err)
	}
	if err := k.registerNode(ctx); err != nil {
		return nil, fmt.Errorf("start kubelet: %w", err)
	}

	runCtx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	factory := informers.NewSharedInformerFactoryWithOptions(cp.clientset, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", opts.NodeName).String()
	}))
	k.informer = factory.Core().V1().Pods().Informer()
	_, err = k.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.sync(runCtx, obj) },
		UpdateFunc: func(_, obj any) { k.sync(runCtx, obj) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				k.forget(pod)
			}
		},
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("start kubelet: watch pods: %w", err)
	}
	factory.Start(runCtx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), k.informer.HasSynced) {
		cancel()
		return nil, errors.New("start kubelet: pod cache did not sync")
	}
	return k, nil
}

// StartWorkloadControllers runs a second kube-controller-manager with the Deployment,
// ReplicaSet and Job controllers, which the control plane leaves out (the operator does not
// need them): with them, an installed Deployment or hook Job makes pods, for a Kubelet to
// run. The control plane's Stop ends it.
func (cp *ControlPlane) StartWorkloadControllers() error {
	c, err := startComponent("kube-controller-manager-workloads", filepath.Join(cp.env.BinaryAssetsDirectory, "kube-controller-manager"), []string{
		"--kubeconfig=" + cp.KubeconfigPath,
		"--controllers=deployment-controller,replicaset-controller,job-controller",
		"--leader-elect=false",
		"--secure-port=0",
	}, nil, cp.logDir)
	if err != nil {
		return err
	}
	cp.components = append(cp.components, c)
	return nil
}

// Ports returns the loopback ports of a running pod's containerPorts, by port name and by
// number, and whether the pod runs here.
func (k *Kubelet) Ports(namespace, name string) (map[string]int, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, run := range k.pods {
		if run.pod.Namespace == namespace && run.pod.Name == name && !run.gone {
			ports := make(map[string]int, len(run.ports))
			for p, local := range run.ports {
				ports[p] = local
			}
			return ports, true
		}
	}
	return nil, false
}

// StartedPods names, as namespace/name, every pod this kubelet took on, in order.
func (k *Kubelet) StartedPods() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.started)
}

// LogTail returns the last lines of the logs of every container this kubelet ran, for a
// failing test to show.
func (k *Kubelet) LogTail(lines int) string {
	logs, _ := filepath.Glob(filepath.Join(k.logDir, "*.log"))
	var b strings.Builder
	for _, path := range logs {
		fmt.Fprintf(&b, "--- last lines of %s:\n%s\n", filepath.Base(path), tailFile(path, lines))
	}
	return b.String()
}

// Stop ends every process of every pod, without writing to the API server, and waits for
// them.
func (k *Kubelet) Stop() {
	k.mu.Lock()
	for _, run := range k.pods {
		run.gone = true
	}
	k.mu.Unlock()
	k.cancel()
	k.wg.Wait()
}

func (k *Kubelet) registerNode(ctx context.Context) error {
	resources := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("4"),
		corev1.ResourceMemory: resource.MustParse("8Gi"),
		corev1.ResourcePods:   *resource.NewQuantity(20, resource.DecimalSI),
	}
	now := metav1.Now()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: k.opts.NodeName, Labels: map[string]string{corev1.LabelHostname: k.opts.NodeName}},
		Status: corev1.NodeStatus{
			Capacity:    resources,
			Allocatable: resources.DeepCopy(),
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				LastHeartbeatTime: now, LastTransitionTime: now,
			}},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
		},
	}
	if _, err := k.cp.clientset.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create node %s: %w", node.Name, err)
	}
	return k.cp.waitFor(ctx, "node "+node.Name+" to be schedulable", func(ctx context.Context) (bool, error) {
		node, err := k.cp.clientset.CoreV1().Nodes().Get(ctx, k.opts.NodeName, metav1.GetOptions{})
		if err != nil {
			return false, fmt.Errorf("get node %s: %w", k.opts.NodeName, err)
		}
		return nodeSchedulable(node), nil
	})
}

// sync starts a new pod's processes, and stops a pod's that is being deleted.
func (k *Kubelet) sync(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if ctx.Err() != nil {
		return
	}
	run, known := k.pods[pod.UID]
	switch {
	case known && pod.DeletionTimestamp != nil:
		run.cancel()
		select {
		case <-run.done:
			// Its containers ended before (a Job's pod): only the object is left.
			k.wg.Go(func() { k.remove(pod) })
		default:
		}
	case known:
	case pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		// Nothing of it runs here (any more): a deleted one only needs removing.
		if pod.DeletionTimestamp != nil {
			k.wg.Go(func() { k.remove(pod) })
		}
	default:
		podCtx, cancel := context.WithCancel(ctx)
		run = &podRun{pod: pod.DeepCopy(), dir: filepath.Join(k.workDir, string(pod.UID)), cancel: cancel, done: make(chan struct{})}
		k.pods[pod.UID] = run
		k.started = append(k.started, pod.Namespace+"/"+pod.Name)
		k.wg.Go(func() {
			defer close(run.done)
			k.runPod(podCtx, run)
		})
	}
}

// forget stops the processes of a pod that no longer exists.
func (k *Kubelet) forget(pod *corev1.Pod) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if run, ok := k.pods[pod.UID]; ok {
		run.gone = true
		run.cancel()
		delete(k.pods, pod.UID)
	}
}

func (k *Kubelet) isGone(run *podRun) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return run.gone
}

// container is one running container of a pod.
type container struct {
	spec     corev1.Container
	program  string
	args     []string
	env      []string
	proc     *component
	restarts int32
	ready    bool
	started  metav1.Time
	exitCode int
	finished bool
}

// runPod runs a pod's containers until they end (restart policy Never or OnFailure) or the
// pod is deleted.
func (k *Kubelet) runPod(ctx context.Context, run *podRun) {
	pod := run.pod
	log := k.log.WithValues("pod", pod.Namespace+"/"+pod.Name)
	if len(pod.Spec.InitContainers) > 0 {
		k.fail(pod, "InitContainersUnsupported", "the local kubelet runs no init containers")
		return
	}
	containers, err := k.prepare(ctx, run)
	if err != nil {
		log.Error(err, "cannot run pod")
		k.fail(pod, "CannotRun", err.Error())
		return
	}
	for _, c := range containers {
		if err := k.start(run, c); err != nil {
			log.Error(err, "start container", "container", c.spec.Name)
			k.stopAll(containers, 0)
			k.fail(pod, "StartError", err.Error())
			return
		}
	}
	log.Info("pod started", "containers", len(containers), "ports", run.ports)
	k.writeStatus(ctx, pod, containers)

	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			grace := kubeletStopGrace
			if s := pod.Spec.TerminationGracePeriodSeconds; s != nil && time.Duration(*s)*time.Second < grace {
				grace = time.Duration(*s) * time.Second
			}
			k.stopAll(containers, grace)
			log.Info("pod stopped")
			if !k.isGone(run) {
				k.remove(pod)
			}
			return
		case <-ticker.C:
		}
		changed := false
		running := 0
		for _, c := range containers {
			if c.finished {
				continue
			}
			if exited, exitErr := c.proc.hasExited(); exited {
				c.exitCode = exitCode(exitErr)
				c.ready = false
				changed = true
				log.Info("container exited", "container", c.spec.Name, "exitCode", c.exitCode)
				if pod.Spec.RestartPolicy == corev1.RestartPolicyAlways || (pod.Spec.RestartPolicy == corev1.RestartPolicyOnFailure && c.exitCode != 0) {
					c.restarts++
					if err := k.start(run, c); err != nil {
						log.Error(err, "restart container", "container", c.spec.Name)
						c.finished = true
					}
				} else {
					c.finished = true
				}
			} else if !c.ready && k.probe(run, c) {
				c.ready = true
				changed = true
			}
			if !c.finished {
				running++
			}
		}
		if changed {
			k.writeStatus(ctx, pod, containers)
		}
		if running == 0 {
			return
		}
	}
}

// prepare works out each container's program, args and environment, and writes the
// kubeconfig of the pod's ServiceAccount.
func (k *Kubelet) prepare(ctx context.Context, run *podRun) ([]*container, error) {
	pod := run.pod
	if err := os.MkdirAll(filepath.Join(run.dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("create pod directory: %w", err)
	}
	kubeconfig, err := k.writeKubeconfig(run)
	if err != nil {
		return nil, err
	}
	ports := map[string]int{}
	byContainerPort := map[int32]int{}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			local, err := freeLoopbackPort()
			if err != nil {
				return nil, err
			}
			byContainerPort[p.ContainerPort] = local
			ports[strconv.Itoa(int(p.ContainerPort))] = local
			if p.Name != "" {
				ports[p.Name] = local
			}
		}
	}
	k.mu.Lock()
	run.ports = ports
	k.mu.Unlock()
	var containers []*container
	for _, spec := range pod.Spec.Containers {
		program, ok := k.opts.Programs[imageName(spec.Image)]
		if !ok {
			return nil, fmt.Errorf("container %s: no local program for image %s", spec.Name, spec.Image)
		}
		env, err := k.containerEnv(ctx, pod, spec)
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", spec.Name, err)
		}
		vars := map[string]string{}
		for _, e := range env {
			name, value, _ := strings.Cut(e, "=")
			vars[name] = value
		}
		var args []string
		if len(spec.Command) > 0 {
			args = append(args, spec.Command[1:]...)
		}
		args = append(args, spec.Args...)
		for i, arg := range args {
			args[i] = rewriteAddress(expandVars(arg, vars), byContainerPort)
		}
		env = append(env,
			"KUBECONFIG="+kubeconfig,
			"HOME="+run.dir,
			"TMPDIR="+filepath.Join(run.dir, "tmp"),
		)
		containers = append(containers, &container{spec: spec, program: program, args: args, env: env})
	}
	return containers, nil
}

func (k *Kubelet) start(run *podRun, c *container) error {
	pod := run.pod
	logPath := filepath.Join(k.logDir, pod.Namespace+"_"+pod.Name+"_"+c.spec.Name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	fmt.Fprintf(logFile, "=== %s %s %s\n", time.Now().Format(time.RFC3339Nano), c.program, strings.Join(c.args, " "))
	cmd := exec.Command(c.program, c.args...)
	cmd.Dir = run.dir
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childProcAttr()
	if err := startCommand(cmd); err != nil {
		_ = logFile.Close()
		return fmt.Errorf("start %s: %w", c.program, err)
	}
	proc := &component{name: pod.Name + "/" + c.spec.Name, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		proc.exitErr = cmd.Wait()
		_ = logFile.Close()
		close(proc.exited)
	}()
	c.proc = proc
	c.started = metav1.Now()
	c.ready = false
	return nil
}

func (k *Kubelet) stopAll(containers []*container, grace time.Duration) {
	var wg sync.WaitGroup
	for _, c := range containers {
		if c.proc != nil {
			wg.Go(func() { c.proc.stop(grace) })
		}
	}
	wg.Wait()
}

var probeClient = &http.Client{
	Timeout: time.Second,
	Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback probe of a local process
		DisableKeepAlives: true,
	},
}

// probe runs a container's HTTP readiness probe; a container without one is ready once
// started.
func (k *Kubelet) probe(run *podRun, c *container) bool {
	p := c.spec.ReadinessProbe
	if p == nil || p.HTTPGet == nil {
		return true
	}
	port, ok := run.ports[p.HTTPGet.Port.String()]
	if !ok {
		return false
	}
	scheme := "http"
	if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	resp, err := probeClient.Get(fmt.Sprintf("%s://127.0.0.1:%d%s", scheme, port, p.HTTPGet.Path))
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

// writeStatus reports the containers' state as the pod's status.
func (k *Kubelet) writeStatus(ctx context.Context, pod *corev1.Pod, containers []*container) {
	allReady, allDone, anyFailed := true, true, false
	var statuses []corev1.ContainerStatus
	for _, c := range containers {
		s := corev1.ContainerStatus{
			Name: c.spec.Name, Image: c.spec.Image, ImageID: c.spec.Image,
			ContainerID:  fmt.Sprintf("local://%d", c.proc.cmd.Process.Pid),
			Ready:        c.ready,
			RestartCount: c.restarts,
			Started:      new(!c.finished),
		}
		if c.finished {
			reason := "Completed"
			if c.exitCode != 0 {
				reason, anyFailed = "Error", true
			}
			s.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: int32(c.exitCode), Reason: reason, StartedAt: c.started, FinishedAt: metav1.Now()}
		} else {
			allDone = false
			s.State.Running = &corev1.ContainerStateRunning{StartedAt: c.started}
		}
		allReady = allReady && c.ready
		statuses = append(statuses, s)
	}
	phase := corev1.PodRunning
	switch {
	case allDone && anyFailed:
		phase = corev1.PodFailed
	case allDone:
		phase = corev1.PodSucceeded
	}
	k.updateStatus(ctx, pod, func(status *corev1.PodStatus) {
		now := metav1.Now()
		status.Phase = phase
		status.HostIP, status.PodIP = "127.0.0.1", "127.0.0.1"
		status.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
		status.PodIPs = []corev1.PodIP{{IP: "127.0.0.1"}}
		if status.StartTime == nil {
			status.StartTime = &now
		}
		status.ContainerStatuses = statuses
		ready := corev1.ConditionFalse
		if allReady && !allDone {
			ready = corev1.ConditionTrue
		}
		setCondition(status, corev1.PodInitialized, corev1.ConditionTrue)
		setCondition(status, corev1.ContainersReady, ready)
		setCondition(status, corev1.PodReady, ready)
	})
}

// fail marks a pod that cannot run here as Failed, with the reason.
func (k *Kubelet) fail(pod *corev1.Pod, reason, message string) {
	k.updateStatus(context.Background(), pod, func(status *corev1.PodStatus) {
		status.Phase = corev1.PodFailed
		status.Reason = reason
		status.Message = message
	})
}

func (k *Kubelet) updateStatus(ctx context.Context, pod *corev1.Pod, mutate func(*corev1.PodStatus)) {
	pods := k.cp.clientset.CoreV1().Pods(pod.Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		current, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if current.UID != pod.UID {
			return apierrors.NewNotFound(corev1.Resource("pods"), pod.Name)
		}
		mutate(&current.Status)
		_, err = pods.UpdateStatus(ctx, current, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		k.log.Error(err, "update pod status", "pod", pod.Namespace+"/"+pod.Name)
	}
}

// remove deletes a pod whose processes have ended, as the kubelet does once a pod that is
// being deleted has stopped.
func (k *Kubelet) remove(pod *corev1.Pod) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := k.cp.clientset.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: new(int64(0)),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		k.log.Error(err, "remove pod", "pod", pod.Namespace+"/"+pod.Name)
	}
}

func setCondition(status *corev1.PodStatus, kind corev1.PodConditionType, value corev1.ConditionStatus) {
	for i := range status.Conditions {
		if status.Conditions[i].Type == kind {
			if status.Conditions[i].Status != value {
				status.Conditions[i].Status = value
				status.Conditions[i].LastTransitionTime = metav1.Now()
			}
			return
		}
	}
	status.Conditions = append(status.Conditions, corev1.PodCondition{Type: kind, Status: value, LastTransitionTime: metav1.Now()})
}

// writeKubeconfig writes a kubeconfig that reaches the API server as the pod's
// ServiceAccount: the control plane's administrator impersonating it, with the groups a
// ServiceAccount token carries.
func (k *Kubelet) writeKubeconfig(run *podRun) (string, error) {
	pod := run.pod
	account := pod.Spec.ServiceAccountName
	if account == "" {
		account = "default"
	}
	admin := k.cp.Config
	config := clientcmdapi.NewConfig()
	config.Clusters["local"] = &clientcmdapi.Cluster{Server: admin.Host, CertificateAuthorityData: admin.CAData}
	config.AuthInfos["pod"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: admin.CertData,
		ClientKeyData:         admin.KeyData,
		Token:                 admin.BearerToken,
		Impersonate:           "system:serviceaccount:" + pod.Namespace + ":" + account,
		ImpersonateGroups:     []string{"system:serviceaccounts", "system:serviceaccounts:" + pod.Namespace, "system:authenticated"},
	}
	config.Contexts["pod"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "pod", Namespace: pod.Namespace}
	config.CurrentContext = "pod"
	path := filepath.Join(run.dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*config, path); err != nil {
		return "", fmt.Errorf("write kubeconfig of %s: %w", account, err)
	}
	return path, nil
}

// containerEnv resolves a container's env entries in order, as NAME=value.
func (k *Kubelet) containerEnv(ctx context.Context, pod *corev1.Pod, c corev1.Container) ([]string, error) {
	if len(c.EnvFrom) > 0 {
		return nil, errors.New("envFrom is not supported by the local kubelet")
	}
	vars := map[string]string{}
	var env []string
	for _, e := range c.Env {
		value := expandVars(e.Value, vars)
		if src := e.ValueFrom; src != nil {
			var err error
			if value, err = k.envSource(ctx, pod, src); err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
		}
		vars[e.Name] = value
		env = append(env, e.Name+"="+value)
	}
	return env, nil
}

func (k *Kubelet) envSource(ctx context.Context, pod *corev1.Pod, src *corev1.EnvVarSource) (string, error) {
	switch {
	case src.FieldRef != nil:
		switch src.FieldRef.FieldPath {
		case "metadata.name":
			return pod.Name, nil
		case "metadata.namespace":
			return pod.Namespace, nil
		case "metadata.uid":
			return string(pod.UID), nil
		case "spec.nodeName":
			return pod.Spec.NodeName, nil
		case "spec.serviceAccountName":
			return pod.Spec.ServiceAccountName, nil
		case "status.podIP", "status.hostIP":
			return "127.0.0.1", nil
		}
		return "", fmt.Errorf("field %s is not supported", src.FieldRef.FieldPath)
	case src.SecretKeyRef != nil:
		secret, err := k.cp.clientset.CoreV1().Secrets(pod.Namespace).Get(ctx, src.SecretKeyRef.Name, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("read Secret %s: %w", src.SecretKeyRef.Name, err)
		}
		return string(secret.Data[src.SecretKeyRef.Key]), nil
	case src.ConfigMapKeyRef != nil:
		cm, err := k.cp.clientset.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, src.ConfigMapKeyRef.Name, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("read ConfigMap %s: %w", src.ConfigMapKeyRef.Name, err)
		}
		return cm.Data[src.ConfigMapKeyRef.Key], nil
	}
	return "", errors.New("unsupported valueFrom")
}

var varReference = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)`)

// expandVars replaces $(NAME) with the variable's value, as Kubernetes does in args and env
// values; $$ stands for $, and an unknown reference stays as written.
func expandVars(s string, vars map[string]string) string {
	return varReference.ReplaceAllStringFunc(s, func(ref string) string {
		if ref == "$$" {
			return "$"
		}
		if v, ok := vars[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

// rewriteAddress points an address argument (`--flag=host:port`, or a bare `host:port`) at
// the loopback port that stands for a declared containerPort.
func rewriteAddress(arg string, ports map[int32]int) string {
	prefix, value := "", arg
	if strings.HasPrefix(arg, "-") {
		name, v, ok := strings.Cut(arg, "=")
		if !ok {
			return arg
		}
		prefix, value = name+"=", v
	}
	host, portText, err := net.SplitHostPort(value)
	if err != nil || strings.Contains(host, "/") {
		return arg
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return arg
	}
	local, ok := ports[int32(port)]
	if !ok {
		return arg
	}
	return prefix + net.JoinHostPort("127.0.0.1", strconv.Itoa(local))
}

// imageName is an image reference without its tag or digest.
func imageName(image string) string {
	if at := strings.Index(image, "@"); at >= 0 {
		image = image[:at]
	}
	if colon := strings.LastIndex(image, ":"); colon > strings.LastIndex(image, "/") {
		image = image[:colon]
	}
	return image
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() >= 0 {
		return exit.ExitCode()
	}
	return 1
}
