package install_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/test/framework"
	"github.com/runnerpool/runnerpool-operator/test/images"
)

// leaderElectionID is the manager's Lease name (internal/operator).
const leaderElectionID = "runnerpool-operator.ci.runnerpool.dev"

// The chart installed as a user installs it, with the locally built manager image, runs the
// manager as a real pod on a real kubelet and containerd: under the chart's securityContext
// and RBAC, with its ServiceAccount token, it becomes Ready, wins the leader election, serves
// metrics over HTTPS to callers the API server vouches for, and serves a pool whose runner
// pods land on kwok nodes, reaching the API server and bbsim from inside its pod. Uninstalling
// leaves no container, mount nor cgroup of it on the node.
func TestChartRunsManagerOnRealNode(t *testing.T) {
	r := &running{helm: tool(t, "helm"), kubectl: tool(t, "kubectl")}
	bin := repoPath("bin")
	for _, image := range []images.Image{images.Pause, images.Manager} {
		if err := image.Check(bin); err != nil {
			t.Fatal(err)
		}
	}
	r.start(t, framework.Options{Nodes: -1, RealNode: &framework.RealNodeOptions{
		PauseImage:   images.Pause.Ref,
		PauseArchive: images.Pause.Archive(bin),
		Images:       []string{images.Manager.Archive(bin)},
	}})
	node := r.cp.RealNode()
	ctx := t.Context()
	// bbsim listens on the node's address, the host end of its bridge, where the manager pod
	// reaches it.
	r.startBBSimOn(t, node.IP().String())

	const (
		release   = "rp"
		namespace = "rp-system"
		team      = "team-real"
	)
	r.createNamespace(t, namespace, true)
	r.createNamespace(t, team, false)
	if images.Manager.Ref != "ghcr.io/runnerpool/runnerpool-operator:"+chartAppVersion(t) {
		t.Fatalf("the manager image %s is not the chart's default image", images.Manager.Ref)
	}
	// The chart's default image, never pulled: containerd has it from its archive.
	r.mustRunLong(t, r.helm, "install", release, chartDir, "--namespace", namespace,
		"--set", "image.pullPolicy=Never",
		"--set", "nodeSelector."+strings.ReplaceAll(framework.RealNodeLabel, ".", `\.`)+"="+framework.RealNodeLabelValue,
		"--set", "tolerations[0].key="+framework.RealNodeTaint, "--set", "tolerations[0].operator=Exists",
		"--set", "bitbucket.apiURL="+r.bbsimURL,
		"--set", "bitbucket.tokenURL="+r.bbsimURL+"/site/oauth2/access_token",
		// The cleanup hook's image (kubectl) is not among the images built here; the pools
		// are deleted before the uninstall instead, as the README says for the bundle.
		"--set", "cleanupOnUninstall=false",
		"--wait", "--timeout", "3m")
	name := r.managerPod(t, namespace, release)
	pod, err := r.clientset.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Spec.NodeName != node.Name() {
		t.Fatalf("manager pod %s runs on %q, not on the real node %s", name, pod.Spec.NodeName, node.Name())
	}
	for _, status := range pod.Status.ContainerStatuses {
		if !strings.HasPrefix(status.ContainerID, "containerd://") || !status.Ready {
			t.Fatalf("container %s of %s: id %q ready %v, want a ready containerd container", status.Name, name, status.ContainerID, status.Ready)
		}
	}
	t.Logf("manager pod %s runs on %s at %s", name, node.Name(), pod.Status.PodIP)

	r.eventually(t, time.Minute, "the manager pod to hold the leader Lease", func() (bool, string) {
		lease, err := r.clientset.CoordinationV1().Leases(namespace).Get(ctx, leaderElectionID, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		holder := ""
		if lease.Spec.HolderIdentity != nil {
			holder = *lease.Spec.HolderIdentity
		}
		return strings.HasPrefix(holder, name+"_"), "holder " + holder
	})
	r.checkSecureMetrics(t, namespace, name, "rp-runnerpool-operator")

	pool := r.applySamplePool(t, team)
	r.waitServed(t, pool, 1)

	r.mustRunLong(t, r.kubectl, "delete", "runnerpools.ci.runnerpool.dev", "--all", "--namespace", team, "--wait", "--timeout=2m")
	r.checkNothingLeft(t, team)
	r.mustRunLong(t, r.helm, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "2m")
	r.waitNoPods(t, namespace)
	node.ExpectNothingLeft(t, time.Minute, pod.UID)
}

// startBBSimOn serves bbsim on host, watching the pods as the runner agents it plays.
func (r *running) startBBSimOn(t *testing.T, host string) {
	t.Helper()
	r.bbsim = bbsim.New(bbsim.Options{})
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	r.bbsimURL = "http://" + ln.Addr().String()
	srv := &http.Server{Handler: r.bbsim, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = r.bbsim.WatchPods(ctx, r.clientset, "") }()
	t.Cleanup(func() {
		cancel()
		_ = srv.Close()
		r.bbsim.Close()
	})
}

func chartAppVersion(t *testing.T) string {
	t.Helper()
	for _, line := range strings.Split(string(readRepoFile(t, chartDir+"/Chart.yaml")), "\n") {
		if value, ok := strings.CutPrefix(line, "appVersion:"); ok {
			return strings.Trim(strings.TrimSpace(value), `"`)
		}
	}
	t.Fatal("Chart.yaml has no appVersion")
	return ""
}
