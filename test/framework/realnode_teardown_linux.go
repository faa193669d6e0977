package framework

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
)

// Stop ends the node: the pods on it go as the kubelet ends them (their containers stopped,
// their sandboxes' networks torn down, their volumes unmounted), then the kubelet and
// containerd stop, and whatever is still left is killed and removed: processes, mounts,
// cgroups, the bridge, the NAT rule, the kernel settings the kubelet changed. It is safe to
// call more than once; the control plane's Stop calls it.
func (n *RealNode) Stop() error {
	n.stopOnce.Do(func() {
		var errs []error
		if n.kubelet != nil {
			if err := n.drain(); err != nil {
				errs = append(errs, err)
			}
			n.kubelet.stop(stopGrace)
		}
		if n.containerd != nil {
			n.containerd.stop(stopGrace)
		}
		if err := sweepRealNode(n.dir); err != nil {
			errs = append(errs, err)
		}
		if n.lock != nil {
			_ = n.lock.Close()
		}
		n.stopErr = errors.Join(errs...)
	})
	return n.stopErr
}

// drain deletes the pods bound to the node and waits until the kubelet has ended them and
// nothing of them is left.
func (n *RealNode) drain() error {
	ctx, cancel := context.WithTimeout(context.Background(), realNodeDrainTimeout)
	defer cancel()
	// Cordoned first, so that no controller's replacement pod lands on the node meanwhile.
	cordon := []byte(`{"spec":{"unschedulable":true}}`)
	if _, err := n.cp.clientset.CoreV1().Nodes().Patch(ctx, n.name, types.MergePatchType, cordon, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("stop real node: cordon it: %w", err)
	}
	pods := n.cp.clientset.CoreV1().Pods(metav1.NamespaceAll)
	list, err := pods.List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", n.name).String()})
	if err != nil {
		return fmt.Errorf("stop real node: list its pods: %w", err)
	}
	grace := int64(1)
	for _, pod := range list.Items {
		err := n.cp.clientset.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("stop real node: delete pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
	}
	var last []string
	err = waitUntil(ctx, func() (bool, error) {
		left, err := pods.List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", n.name).String()})
		if err != nil {
			return false, err
		}
		last = n.Leftovers()
		for _, pod := range left.Items {
			last = append(last, "pod "+pod.Namespace+"/"+pod.Name)
		}
		return len(last) == 0, nil
	}, "the real node's pods to end")
	if err != nil {
		return fmt.Errorf("stop real node: %w; left: %s", err, strings.Join(last, ", "))
	}
	return nil
}

// Leftovers lists what is left on the node of the given pods, or of every pod when none is
// given: running containers, mounts (volumes, root filesystems, sandboxes' shared memory and
// network namespaces) and cgroups. A pod that is gone leaves nothing.
func (n *RealNode) Leftovers(pods ...types.UID) []string {
	var left []string
	ofPod := func(s string) bool {
		if len(pods) == 0 {
			return true
		}
		return slices.ContainsFunc(pods, func(uid types.UID) bool {
			return strings.Contains(s, string(uid)) || strings.Contains(s, strings.ReplaceAll(string(uid), "-", "_"))
		})
	}
	containers := map[string]bool{}
	if out, err := n.ctrOutput("containers", "list"); err == nil {
		for _, line := range strings.Split(out, "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) == 0 {
				continue
			}
			info, err := n.ctrOutput("containers", "info", fields[0])
			if err == nil && ofPod(info) {
				containers[fields[0]] = true
			}
		}
	}
	if out, err := n.ctrOutput("tasks", "list"); err == nil {
		for _, line := range strings.Split(out, "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) >= 3 && containers[fields[0]] && fields[2] != "STOPPED" {
				left = append(left, fmt.Sprintf("container %s %s", fields[0], fields[2]))
			}
		}
	}
	dir := n.dir + string(filepath.Separator)
	for _, m := range readMountInfo() {
		// A pod's volumes, its containers' root filesystems, its sandbox's shared memory and
		// network namespace; not the node's own (the kubelet makes its root dir a shared mount).
		ofAPod := strings.HasPrefix(m.point, n.state.KubeletRoot+"/pods/") ||
			strings.HasPrefix(m.point, dir) && (strings.Contains(m.point, "/sandboxes/") || strings.Contains(m.point, "/netns/") || strings.HasSuffix(m.point, "/rootfs"))
		if !ofAPod {
			continue
		}
		if ofPod(m.point) || slices.ContainsFunc(slices.Collect(maps.Keys(containers)), func(id string) bool { return strings.Contains(m.point, id) }) {
			left = append(left, "mount "+m.point)
		}
	}
	for _, mount := range cgroupMounts() {
		kubepods := filepath.Join(mount, n.state.CgroupRoot, "kubepods")
		_ = filepath.WalkDir(kubepods, func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			if strings.HasPrefix(d.Name(), "pod") && ofPod(d.Name()) {
				left = append(left, "cgroup "+path)
				return filepath.SkipDir
			}
			return nil
		})
	}
	return left
}

type mountInfo struct {
	point  string
	fsType string
}

// readMountInfo lists this process's mounts.
func readMountInfo() []mountInfo {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mounts []mountInfo
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for scanner.Scan() {
		// id parent major:minor root point options [optional...] - type source superoptions
		fields := strings.Fields(scanner.Text())
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		mounts = append(mounts, mountInfo{point: unescapeMount(fields[4]), fsType: fields[sep+1]})
	}
	return mounts
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// sweepRealNode removes whatever a real node whose directory is dir left on the machine: the
// processes in its cgroups and those naming its directory, its mounts, its cgroups, its
// bridge and NAT rule, the container log links into its directory and its CNI cache entries,
// and it puts back the kernel settings the kubelet changed. Stop calls it last; the janitor
// calls it for a killed test's node.
func sweepRealNode(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, realNodeStateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read real node state: %w", err)
	}
	var state realNodeState
	if err := json.Unmarshal(data, &state); err != nil {
		return fmt.Errorf("decode real node state: %w", err)
	}
	var errs []error
	killProcessesUsing(dir)
	if state.CgroupRoot != "" {
		for _, mount := range cgroupMounts() {
			killCgroupTree(filepath.Join(mount, state.CgroupRoot))
		}
	}
	if err := unmountUnder(dir); err != nil {
		errs = append(errs, err)
	}
	if state.CgroupRoot != "" {
		for _, mount := range cgroupMounts() {
			if err := removeCgroupTree(filepath.Join(mount, state.CgroupRoot)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(state.NATRule) > 0 {
		// Deleted until none is left, in case a rule was added twice.
		deleted := true
		for deleted {
			deleted = run("iptables", append([]string{"-t", "nat", "-D"}, state.NATRule...)...) == nil
		}
	}
	if state.Bridge != "" {
		if _, err := net.InterfaceByName(state.Bridge); err == nil {
			if err := run("ip", "link", "del", state.Bridge); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for key, value := range state.Sysctls {
		path := filepath.Join("/proc/sys", key)
		current, err := os.ReadFile(path)
		// Put back only what still holds the kubelet's value: anything else was changed by
		// someone else since.
		if err == nil && strings.TrimSpace(string(current)) == state.KubeletSet[key] && value != state.KubeletSet[key] {
			if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("restore %s: %w", key, err))
			}
		}
	}
	if links, err := os.ReadDir(legacyContainerLogsDir); err == nil {
		for _, link := range links {
			path := filepath.Join(legacyContainerLogsDir, link.Name())
			if target, err := os.Readlink(path); err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) {
				_ = os.Remove(path)
			}
		}
	}
	if state.Network != "" {
		cached, _ := filepath.Glob(filepath.Join(cniCacheDir, state.Network+"-*"))
		for _, path := range cached {
			_ = os.Remove(path)
		}
	}
	// containerd's loopback network is named for no node: its entries are known by the
	// node's sandboxes.
	sandboxes, _ := os.ReadDir(filepath.Join(dir, "containerd", "state", "io.containerd.grpc.v1.cri", "sandboxes"))
	for _, sandbox := range sandboxes {
		_ = os.Remove(filepath.Join(cniCacheDir, "cni-loopback-"+sandbox.Name()+"-lo"))
	}
	// Directories the kubelet, the CNI library and the shims (their sockets) create outside
	// the node's own: they go when nothing else uses them.
	for _, shared := range []string{legacyContainerLogsDir, cniCacheDir, filepath.Dir(cniCacheDir), "/run/containerd/s", "/run/containerd"} {
		_ = os.Remove(shared)
	}
	_ = os.Remove(filepath.Join(dir, realNodeStateFile))
	return errors.Join(errs...)
}

// killCgroupTree kills every process in a cgroup and its descendants, until none is left.
func killCgroupTree(root string) {
	for range 50 {
		found := false
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			data, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, field := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(field); err == nil && pid != os.Getpid() {
					found = true
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
		if !found {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroupTree removes a cgroup and its descendants, deepest first.
func removeCgroupTree(root string) error {
	var dirs []string
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var errs []error
	for _, dir := range dirs {
		var err error
		// A cgroup whose last process just died may be busy for a moment.
		for range 20 {
			if err = syscall.Rmdir(dir); err == nil || errors.Is(err, syscall.ENOENT) {
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// unmountUnder detaches every mount under dir, deepest first.
func unmountUnder(dir string) error {
	prefix := filepath.Clean(dir) + string(filepath.Separator)
	for range 5 {
		var points []string
		for _, m := range readMountInfo() {
			if strings.HasPrefix(m.point, prefix) {
				points = append(points, m.point)
			}
		}
		if len(points) == 0 {
			return nil
		}
		sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
		for _, point := range points {
			_ = syscall.Unmount(point, syscall.MNT_DETACH)
		}
	}
	var left []string
	for _, m := range readMountInfo() {
		if strings.HasPrefix(m.point, prefix) {
			left = append(left, m.point)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("mounts left under %s: %s", dir, strings.Join(left, ", "))
	}
	return nil
}
