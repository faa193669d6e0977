package framework

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

const (
	realNodeDir       = "node"
	realNodeStateFile = "state.json"
	// realNodeLockFile serialises real nodes on a machine: the kernel settings the kubelet
	// changes are the machine's, and two nodes would only fight for two cores.
	realNodeLockFile = "runnerpool-real-node.lock"
	// realNodeReadyTimeout bounds the wait for the kubelet to register and report Ready.
	realNodeReadyTimeout = 2 * time.Minute
	// realNodeDrainTimeout bounds Stop's wait for the pods on the node to go the way the
	// kubelet ends them, before everything left is killed.
	realNodeDrainTimeout = 45 * time.Second
	// legacyContainerLogsDir is where the kubelet links every container's log, whatever its
	// configuration says; Stop removes the links into the node's directory.
	legacyContainerLogsDir = "/var/log/containers"
	// cniCacheDir is where the CNI library containerd uses caches results, by network name.
	cniCacheDir = "/var/lib/cni/results"
	// unreachableProxy is a loopback port nothing listens on: containerd sends any pull
	// there, so an image that was not loaded fails at once and nothing leaves the machine.
	unreachableProxy = "http://127.0.0.1:9"
)

// kubeletSysctls are the kernel settings the kubelet sets at start (and checks with
// protectKernelDefaults); Stop puts back the values they had.
var kubeletSysctls = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// cniPluginDirs are where distributions install the CNI plugins: Debian's
// containernetworking-plugins, then the upstream default.
var cniPluginDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// checkRealNodeHost reports what this machine lacks to run a real node.
func checkRealNodeHost(binDir string) (cniDir string, err error) {
	var missing []string
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("%w: a kubelet and containerd need root (running as uid %d); run the tests as root, as CI does", ErrRealNodeUnavailable, os.Geteuid())
	}
	for _, program := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "iptables", "ip"} {
		if _, err := exec.LookPath(program); err != nil {
			missing = append(missing, program)
		}
	}
	if info, err := os.Stat(filepath.Join(binDir, "kubelet")); err != nil || info.Mode().Perm()&0o111 == 0 {
		missing = append(missing, filepath.Join(binDir, "kubelet")+" (make tools-node)")
	}
	for _, dir := range cniPluginDirs {
		if _, err := os.Stat(filepath.Join(dir, "bridge")); err == nil {
			cniDir = dir
			break
		}
	}
	if cniDir == "" {
		missing = append(missing, "the CNI bridge plugin in "+strings.Join(cniPluginDirs, " or "))
	} else {
		for _, plugin := range []string{"host-local", "loopback"} {
			if _, err := os.Stat(filepath.Join(cniDir, plugin)); err != nil {
				missing = append(missing, "the CNI "+plugin+" plugin in "+cniDir)
			}
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("%w: missing %s (make node-prereqs installs Debian's containerd, runc, containernetworking-plugins and iptables)",
			ErrRealNodeUnavailable, strings.Join(missing, ", "))
	}
	return cniDir, nil
}

// startRealNode brings up the real node: a bridge, containerd with the CNI bridge on it, the
// images, and a kubelet registered with the control plane; it returns once the node is Ready.
func (cp *ControlPlane) startRealNode(ctx context.Context, binDir string, opts RealNodeOptions) (_ *RealNode, err error) {
	if opts.PauseImage == "" || opts.PauseArchive == "" {
		return nil, errors.New("start real node: PauseImage and PauseArchive are required")
	}
	cniDir, err := checkRealNodeHost(binDir)
	if err != nil {
		return nil, err
	}
	n := &RealNode{name: opts.Name, cp: cp, dir: filepath.Join(cp.workDir, realNodeDir), lock: cp.realNodeLock}
	cp.realNodeLock = nil
	if n.name == "" {
		n.name = DefaultRealNodeName
	}
	defer func() {
		if err != nil {
			_ = n.Stop()
		}
	}()
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return nil, fmt.Errorf("start real node: %w", err)
	}
	id := randomID()
	n.state = realNodeState{
		Bridge:           "rpo" + id,
		Network:          "runnerpool-" + id,
		CgroupRoot:       "/runnerpool-node-" + id,
		KubeletRoot:      filepath.Join(n.dir, "kubelet"),
		ContainerdSocket: filepath.Join(n.dir, "containerd.sock"),
	}
	if err := n.setUpNetwork(); err != nil {
		return nil, fmt.Errorf("start real node: %w", err)
	}
	if err := n.setUpCgroups(); err != nil {
		return nil, fmt.Errorf("start real node: %w", err)
	}
	if err := n.startContainerd(ctx, cniDir, opts.PauseImage); err != nil {
		return nil, fmt.Errorf("start real node: %w", err)
	}
	if err := n.LoadImages(ctx, append([]string{opts.PauseArchive}, opts.Images...)...); err != nil {
		return nil, fmt.Errorf("start real node: %w", err)
	}
	if err := n.saveSysctls(); err != nil {
		return nil, fmt.Errorf("start real node: %w", err)
	}
	if err := n.startKubelet(ctx, binDir); err != nil {
		return nil, fmt.Errorf("start real node: %w", err)
	}
	return n, nil
}

func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// lockRealNode takes the machine-wide real node lock, waiting while another test holds it.
// The kernel drops the lock when its holder dies.
func lockRealNode(ctx context.Context) (io.Closer, error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), realNodeLockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open real node lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("wait for another test's real node to stop: %w", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

func (n *RealNode) saveState() error {
	data, err := json.MarshalIndent(n.state, "", "  ")
	if err != nil {
		return fmt.Errorf("encode real node state: %w", err)
	}
	if err := os.WriteFile(filepath.Join(n.dir, realNodeStateFile), data, 0o644); err != nil {
		return fmt.Errorf("write real node state: %w", err)
	}
	return nil
}

// setUpNetwork creates the node's bridge on a free private /24, its host end being the
// gateway of the pods and the node's address, and the one NAT rule that sends the pods'
// connections to the kubernetes Service's ClusterIP to the API server on loopback. Nothing is
// routed off the machine: there is no masquerade, and forwarding stays as the machine has it.
func (n *RealNode) setUpNetwork() error {
	subnet, gateway, err := freeSubnet()
	if err != nil {
		return err
	}
	n.state.Subnet, n.state.Gateway = subnet.String(), gateway.String()
	apiPort := n.cp.env.ControlPlane.APIServer.SecureServing.Port
	n.state.NATRule = []string{"PREROUTING", "-i", n.state.Bridge, "-d", kubernetesServiceIP.String() + "/32", "-p", "tcp", "--dport", "443",
		"-m", "comment", "--comment", "runnerpool test node " + n.state.Bridge,
		"-j", "DNAT", "--to-destination", "127.0.0.1:" + apiPort}
	// Saved before anything is made, so a killed test's leftovers are known.
	if err := n.saveState(); err != nil {
		return err
	}
	prefix, _ := subnet.Mask.Size()
	// A bridge whose address is not set takes the lowest of its ports' addresses, so it
	// changes when that pod goes; the other pods' ARP entries for their gateway then point
	// nowhere and their connections to the node stall for the 15 s or so the kernel takes to
	// find out. An address set here is kept whatever the ports.
	mac, err := bridgeAddress()
	if err != nil {
		return err
	}
	for _, args := range [][]string{
		{"link", "add", n.state.Bridge, "address", mac, "type", "bridge"},
		{"addr", "add", fmt.Sprintf("%s/%d", gateway, prefix), "dev", n.state.Bridge},
		{"link", "set", n.state.Bridge, "up"},
	} {
		if err := run("ip", args...); err != nil {
			return err
		}
	}
	// The DNAT above sends packets from the bridge to 127.0.0.1, which the kernel drops as
	// martians unless this interface, and only it, may route to loopback.
	if err := os.WriteFile(fmt.Sprintf("/proc/sys/net/ipv4/conf/%s/route_localnet", n.state.Bridge), []byte("1"), 0o644); err != nil {
		return fmt.Errorf("allow the bridge to reach the API server on loopback: %w", err)
	}
	if err := run("iptables", append([]string{"-t", "nat", "-A"}, n.state.NATRule...)...); err != nil {
		return err
	}
	return nil
}

// bridgeAddress is a random locally administered unicast MAC address.
func bridgeAddress() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("bridge address: %w", err)
	}
	b[0] = b[0]&^0x01 | 0x02
	return net.HardwareAddr(b).String(), nil
}

// freeSubnet picks the first 10.213.x.0/24 that no interface of the machine is on.
func freeSubnet() (*net.IPNet, net.IP, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, nil, fmt.Errorf("list interface addresses: %w", err)
	}
	for third := range 256 {
		subnet := &net.IPNet{IP: net.IPv4(10, 213, byte(third), 0).To4(), Mask: net.CIDRMask(24, 32)}
		taken := slices.ContainsFunc(addrs, func(a net.Addr) bool {
			ipnet, ok := a.(*net.IPNet)
			return ok && (subnet.Contains(ipnet.IP) || ipnet.Contains(subnet.IP))
		})
		if !taken {
			return subnet, net.IPv4(10, 213, byte(third), 1).To4(), nil
		}
	}
	return nil, nil, errors.New("no free subnet in 10.213.0.0/16 for the real node's bridge")
}

// cgroupMounts are the mount points of the machine's cgroup hierarchies (v1 controllers, the
// named systemd one and the v2 one of a hybrid layout).
func cgroupMounts() []string {
	var mounts []string
	for _, m := range readMountInfo() {
		if m.fsType == "cgroup" || m.fsType == "cgroup2" {
			mounts = append(mounts, m.point)
		}
	}
	return mounts
}

// setUpCgroups creates the node's cgroup root in every hierarchy: the kubelet puts its
// kubepods tree under it (cgroupRoot), so the pods' cgroups are the node's alone.
func (n *RealNode) setUpCgroups() error {
	if err := n.saveState(); err != nil {
		return err
	}
	for _, mount := range cgroupMounts() {
		dir := filepath.Join(mount, n.state.CgroupRoot)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		// A new v1 cpuset has no CPUs nor memory nodes until given its parent's.
		for _, file := range []string{"cpuset.cpus", "cpuset.mems"} {
			parent, err := os.ReadFile(filepath.Join(mount, file))
			if err != nil {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, file), parent, 0o644); err != nil {
				return fmt.Errorf("set %s of %s: %w", file, dir, err)
			}
		}
	}
	return nil
}

// startContainerd writes containerd's configuration (everything under the node's directory,
// the CRI plugin with the CNI bridge, the local pause image, cgroupfs) and starts it.
func (n *RealNode) startContainerd(ctx context.Context, cniDir, pauseImage string) error {
	confDir := filepath.Join(n.dir, "cni")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return fmt.Errorf("create CNI config dir: %w", err)
	}
	cni := map[string]any{
		"cniVersion": "1.0.0",
		"name":       n.state.Network,
		"plugins": []any{map[string]any{
			"type":        "bridge",
			"bridge":      n.state.Bridge,
			"isGateway":   true,
			"ipMasq":      false,
			"hairpinMode": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": n.state.Subnet, "gateway": n.state.Gateway}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": filepath.Join(n.dir, "ipam"),
			},
		}},
	}
	cniJSON, err := json.MarshalIndent(cni, "", "  ")
	if err != nil {
		return fmt.Errorf("encode CNI config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(confDir, "10-bridge.conflist"), cniJSON, 0o644); err != nil {
		return fmt.Errorf("write CNI config: %w", err)
	}
	// restrict_oom_score_adj: the kubelet asks for negative OOM scores (-998 for a sandbox),
	// which need CAP_SYS_RESOURCE, missing from this machine kind's bounding set; runc then
	// dies in "can't get final child's PID from pipe". containerd raises them to its own score.
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
`, filepath.Join(n.dir, "containerd", "root"), filepath.Join(n.dir, "containerd", "state"),
		n.state.ContainerdSocket, n.state.ContainerdSocket+".ttrpc", filepath.Join(n.dir, "containerd", "opt"),
		pauseImage, cniDir, confDir, filepath.Join(n.dir, "runc"))
	configPath := filepath.Join(n.dir, "containerd.toml")
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		return fmt.Errorf("write containerd config: %w", err)
	}
	containerd, err := exec.LookPath("containerd")
	if err != nil {
		return fmt.Errorf("find containerd: %w", err)
	}
	c, err := startComponent("containerd", containerd, []string{"--config", configPath},
		[]string{"HTTP_PROXY=" + unreachableProxy, "HTTPS_PROXY=" + unreachableProxy, "NO_PROXY=", "http_proxy=", "https_proxy=", "no_proxy="}, n.cp.logDir)
	if err != nil {
		return err
	}
	n.containerd = c
	n.cp.components = append(n.cp.components, c)
	return n.cp.waitFor(ctx, "containerd to serve", func(context.Context) (bool, error) {
		return n.ctr("version") == nil, nil
	})
}

// ctr runs containerd's own client against the node's containerd, in the namespace of the
// CRI plugin.
func (n *RealNode) ctr(args ...string) error {
	return run("ctr", append([]string{"--address", n.state.ContainerdSocket, "--namespace", "k8s.io"}, args...)...)
}

func (n *RealNode) ctrOutput(args ...string) (string, error) {
	cmd := exec.Command("ctr", append([]string{"--address", n.state.ContainerdSocket, "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// LoadImages imports OCI image archives into the node's containerd, where the kubelet finds
// them: a pod whose images were loaded starts without pulling.
func (n *RealNode) LoadImages(ctx context.Context, archives ...string) error {
	for _, archive := range archives {
		if _, err := os.Stat(archive); err != nil {
			return fmt.Errorf("load image: %w (make images builds the test images)", err)
		}
		if err := n.ctr("images", "import", "--digests", archive); err != nil {
			return fmt.Errorf("load image %s: %w", archive, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// saveSysctls records the kernel settings the kubelet is about to change.
func (n *RealNode) saveSysctls() error {
	n.state.Sysctls = map[string]string{}
	n.state.KubeletSet = kubeletSysctls
	for key := range kubeletSysctls {
		value, err := os.ReadFile(filepath.Join("/proc/sys", key))
		if err != nil {
			continue
		}
		n.state.Sysctls[key] = strings.TrimSpace(string(value))
	}
	return n.saveState()
}

// startKubelet writes the kubelet's configuration and starts it, then waits until the node
// is registered, Ready and schedulable.
func (n *RealNode) startKubelet(ctx context.Context, binDir string) error {
	port, err := freePort(n.state.Gateway)
	if err != nil {
		return err
	}
	healthzPort, err := freeLoopbackPort()
	if err != nil {
		return err
	}
	resolvConf := filepath.Join(n.dir, "resolv.conf")
	// Pods here reach what they need by address; an empty resolver configuration keeps
	// their lookups inside their own network namespace.
	if err := os.WriteFile(resolvConf, []byte("# no name servers: the test node's pods reach servers by address\n"), 0o644); err != nil {
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	config := map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"address":                  n.state.Gateway,
		"port":                     port,
		"readOnlyPort":             0,
		"healthzBindAddress":       "127.0.0.1",
		"healthzPort":              healthzPort,
		"cgroupDriver":             "cgroupfs",
		"cgroupRoot":               n.state.CgroupRoot,
		"cgroupsPerQOS":            true,
		"failCgroupV1":             false,
		"failSwapOn":               false,
		"containerRuntimeEndpoint": "unix://" + n.state.ContainerdSocket,
		"imageServiceEndpoint":     "unix://" + n.state.ContainerdSocket,
		"resolvConf":               resolvConf,
		"podLogsDir":               filepath.Join(n.dir, "pod-logs"),
		"volumePluginDir":          filepath.Join(n.dir, "volume-plugins"),
		"serializeImagePulls":      false,
		// The images are loaded by the test and cannot be pulled again: never collect them.
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		// A busy shared disk must not evict the test's pods.
		"evictionHard": map[string]string{"memory.available": "0%", "nodefs.available": "0%", "nodefs.inodesFree": "0%", "imagefs.available": "0%"},
		// The kubelet's iptables chains serve kube-proxy, which does not run here.
		"makeIPTablesUtilChains": false,
		"registerWithTaints":     []corev1.Taint{{Key: RealNodeTaint, Effect: corev1.TaintEffectNoSchedule}},
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
		},
		"authorization":             map[string]any{"mode": "Webhook"},
		"nodeStatusReportFrequency": "10s",
		"fileCheckFrequency":        "1s",
		"containerLogMaxSize":       "10Mi",
		// No attach/detach controller runs; the pods' volumes need none anyway.
		"enableControllerAttachDetach": false,
	}
	configJSON, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return fmt.Errorf("encode kubelet config: %w", err)
	}
	configPath := filepath.Join(n.dir, "kubelet.json")
	if err := os.WriteFile(configPath, configJSON, 0o644); err != nil {
		return fmt.Errorf("write kubelet config: %w", err)
	}
	c, err := startComponent("kubelet", filepath.Join(binDir, "kubelet"), []string{
		"--config=" + configPath,
		"--kubeconfig=" + n.cp.KubeconfigPath,
		"--root-dir=" + n.state.KubeletRoot,
		// Not under the root dir unless told: /var/lib/kubelet/pki by default.
		"--cert-dir=" + filepath.Join(n.state.KubeletRoot, "pki"),
		"--hostname-override=" + n.name,
		"--node-ip=" + n.state.Gateway,
		"--node-labels=" + RealNodeLabel + "=" + RealNodeLabelValue,
		"--v=1",
	}, nil, n.cp.logDir)
	if err != nil {
		return err
	}
	n.kubelet = c
	n.cp.components = append(n.cp.components, c)
	ctx, cancel := context.WithTimeout(ctx, realNodeReadyTimeout)
	defer cancel()
	return waitUntil(ctx, func() (bool, error) {
		if err := c.diagnose(); err != nil {
			return false, err
		}
		node, err := n.cp.clientset.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("get node %s: %w", n.name, err)
		}
		return nodeSchedulable(node), nil
	}, "node "+n.name+" to be Ready")
}

func waitUntil(ctx context.Context, condition func() (bool, error), what string) error {
	for {
		done, err := condition()
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func freePort(host string) (int, error) {
	listener, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).Port, nil
}

func run(program string, args ...string) error {
	out, err := exec.Command(program, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", program, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ContainerLog returns what the kubelet has logged so far of a container of a pod on the node,
// read from its log directory, which goes with the pod: a test that examines a failure after
// the pod is gone keeps a copy while the pod runs.
func (n *RealNode) ContainerLog(namespace, pod string, uid types.UID, container string) ([]byte, error) {
	files, err := filepath.Glob(filepath.Join(n.dir, "pod-logs", namespace+"_"+pod+"_"+string(uid), container, "*.log"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no log of container %s of pod %s/%s on node %s", container, namespace, pod, n.name)
	}
	var out []byte
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return out, err
		}
		out = append(out, data...)
	}
	return out, nil
}
