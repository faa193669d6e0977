package framework

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// A real node's machine-wide pieces (bridge, NAT rule, cgroups, containerd and its mounts) are
// all gone after the sweep the janitor runs for a test binary that was killed outright, with
// containerd still running.
func TestSweepRemovesWhatAKilledRealNodeLeft(t *testing.T) {
	cniDir := requireRealNodeHost(t)
	workDir := t.TempDir()
	apiServer := &envtest.APIServer{}
	apiServer.SecureServing.Port = "6443"
	cp := &ControlPlane{workDir: workDir, logDir: workDir, env: &envtest.Environment{ControlPlane: envtest.ControlPlane{APIServer: apiServer}}}
	n := &RealNode{name: "sweep-test", cp: cp, dir: filepath.Join(workDir, realNodeDir)}
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	id := randomID()
	n.state = realNodeState{
		Bridge: "rpo" + id, Network: "runnerpool-" + id, CgroupRoot: "/runnerpool-node-" + id,
		KubeletRoot: filepath.Join(n.dir, "kubelet"), ContainerdSocket: filepath.Join(n.dir, "containerd.sock"),
	}
	t.Cleanup(func() {
		if n.containerd != nil {
			n.containerd.stop(0)
		}
		_ = sweepRealNode(n.dir)
	})
	if err := n.setUpNetwork(); err != nil {
		t.Fatal(err)
	}
	if err := n.setUpCgroups(); err != nil {
		t.Fatal(err)
	}
	if err := n.startContainerd(t.Context(), cniDir, "runnerpool.dev/test/pause:v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := net.InterfaceByName(n.state.Bridge); err != nil {
		t.Fatalf("bridge %s: %v", n.state.Bridge, err)
	}
	if !natRuleExists(t, n.state.Bridge) {
		t.Fatal("no NAT rule for the bridge")
	}
	// What a killed test leaves: containerd running, a mount under the node's directory.
	mnt := filepath.Join(n.dir, "leftover-mount")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}

	if err := sweepRealNode(n.dir); err != nil {
		t.Fatal(err)
	}
	<-n.containerd.exited
	if _, err := net.InterfaceByName(n.state.Bridge); err == nil {
		t.Errorf("bridge %s left", n.state.Bridge)
	}
	if natRuleExists(t, n.state.Bridge) {
		t.Error("NAT rule left")
	}
	for _, mount := range cgroupMounts() {
		if _, err := os.Stat(filepath.Join(mount, n.state.CgroupRoot)); err == nil {
			t.Errorf("cgroup %s left", filepath.Join(mount, n.state.CgroupRoot))
		}
	}
	for _, m := range readMountInfo() {
		if strings.HasPrefix(m.point, n.dir+"/") {
			t.Errorf("mount %s left", m.point)
		}
	}
}

func natRuleExists(t *testing.T, bridge string) bool {
	t.Helper()
	out, err := exec.Command("iptables", "-t", "nat", "-S", "PREROUTING").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables: %v: %s", err, out)
	}
	return strings.Contains(string(out), "-i "+bridge+" ")
}

// requireRealNodeHost fails the test when this machine cannot run a real node: such a test
// never skips.
func requireRealNodeHost(t *testing.T) string {
	t.Helper()
	// The kubelet is not needed here: give checkRealNodeHost a directory that has one.
	binDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(binDir, "kubelet"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	cniDir, err := checkRealNodeHost(binDir)
	if err != nil {
		t.Fatal(err)
	}
	return cniDir
}
