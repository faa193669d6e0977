package realnode

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
)

// A runner pod on a real kubelet does what a runner needs: dind starts first as a native
// sidecar, the runner comes ONLINE, a step runs as a real container of that dind and sees the
// files the runner wrote in the working directory at the same path, the step's memory is
// capped by the cgroup at what the step size promises, and the daemon's storage (the images
// and the step's container) sits on the pod's own volume. With maxSteps 1 the pod is then
// recycled: it stops gracefully, runner first, leaves nothing on the node, and a fresh runner
// takes its place.
func TestRunnerPodRunsStepsInDockerOnRealNode(t *testing.T) {
	begin := time.Now()
	defer func() { t.Logf("took %s", time.Since(begin).Round(time.Millisecond)) }()
	ns := namespace(t)
	dumpOnFailure(t, ns)
	pool := realPool(ns, "steps", 1, 1)
	pool.Spec.Runner.MaxSteps = 1
	createPool(t, pool)
	rp := waitOnline(t, pool, 1)[0]
	t.Logf("runner %s ONLINE in pod %s after %s", rp.runner.UUID, rp.pod.Name, time.Since(begin).Round(time.Millisecond))
	checkSidecarOrder(t, rp.pod)
	stop := watchStop(t, rp.pod)

	// The step prints where it runs and what it finds there, then lingers, so that its
	// process can be found on the node while it runs.
	const content = "written by the runner before the step"
	step := enqueue(t, pool, strings.Join([]string{
		`echo "pwd=$(pwd)"`,
		`echo "input=$(cat input.txt)"`,
		`echo "hostname=$(hostname)"`,
		`sleep 4`,
	}, "\n"), map[string]string{"input.txt": content})
	if runner := waitStepRunning(t, step); runner != rp.runner.UUID {
		t.Fatalf("step %s ran on runner %s, not on %s", step, runner, rp.runner.UUID)
	}

	// Found on the node while the step runs: dind's cgroup, the step's process under it.
	pod := getPod(t, rp.pod)
	dindCgroup := containerCgroup(pod.UID, containerID(statusOf(t, pod, runnerpod.DockerContainerName)))
	runnerCgroup := containerCgroup(pod.UID, containerID(statusOf(t, pod, runnerpod.RunnerContainerName)))
	if dindCgroup == "" || runnerCgroup == "" {
		t.Fatalf("no memory cgroup of pod %s's containers on the node (dind %q, runner %q)", pod.Name, dindCgroup, runnerCgroup)
	}
	var stepPID int
	eventually(t, 30*time.Second, "the step's process in a cgroup under dind's", func() (bool, string) {
		children, _ := filepath.Glob(filepath.Join(dindCgroup, "docker", "*"))
		for _, child := range children {
			for _, pid := range cgroupTreeProcs(child) {
				if strings.HasPrefix(command(pid), "sleep") {
					stepPID = pid
					return true, ""
				}
			}
		}
		return false, fmt.Sprintf("cgroups under %s/docker: %v", dindCgroup, children)
	})
	stepCgroup, err := memoryCgroupOf(stepPID)
	if err != nil {
		t.Fatal(err)
	}
	dindPath := strings.TrimPrefix(dindCgroup, memoryHierarchy)
	if !strings.HasPrefix(stepCgroup, dindPath+"/") {
		t.Fatalf("the step's process %d is in memory cgroup %s, not under dind's %s", stepPID, stepCgroup, dindPath)
	}
	want := v1alpha1.StepMemory["1x"]
	if limit := readInt(t, filepath.Join(dindCgroup, "memory.limit_in_bytes")); limit != want.Value() {
		t.Fatalf("dind's cgroup enforces %d bytes, want %d (%s, step size 1x)", limit, want.Value(), want.String())
	}
	// cgroup v1 charges a child to its ancestors only when hierarchy accounting is on.
	if readInt(t, filepath.Join(dindCgroup, "memory.use_hierarchy")) != 1 {
		t.Fatalf("%s: memory.use_hierarchy is off, the step is not held to dind's limit", dindCgroup)
	}
	minRunner := resource.MustParse("512Mi")
	if limit := readInt(t, filepath.Join(runnerCgroup, "memory.limit_in_bytes")); limit < minRunner.Value() {
		t.Fatalf("the runner container's cgroup enforces %d bytes, below 512Mi", limit)
	}
	t.Logf("step process %d in %s, under dind's cgroup limited to %s", stepPID, stepCgroup, want.String())

	// Docker's storage: /var/lib/docker in dind is the pod's docker-storage emptyDir, which
	// holds the step image's layers and the step's container.
	var dockerd int
	for _, pid := range cgroupProcs(dindCgroup) {
		if strings.HasPrefix(command(pid), "dockerd") {
			dockerd = pid
		}
	}
	if dockerd == 0 {
		t.Fatalf("no dockerd among the processes of dind's cgroup %s", dindCgroup)
	}
	root, fsType, err := mountAt(dockerd, "/var/lib/docker")
	if err != nil {
		t.Fatal(err)
	}
	volume := filepath.Join("pods", string(pod.UID), "volumes", "kubernetes.io~empty-dir", "docker-storage")
	if !strings.HasSuffix(root, "/"+volume) {
		t.Fatalf("dind's /var/lib/docker is %s (%s), not the pod's docker-storage volume", root, fsType)
	}
	if _, err := os.Stat(root); err == nil {
		// The node's directory is on the host's root filesystem: the mount's root is a host path.
		if size := dirSize(root); size < 1<<20 {
			t.Fatalf("the pod's docker-storage volume %s holds %d bytes, not the step image", root, size)
		} else {
			t.Logf("dind's /var/lib/docker is %s (%s), %d KiB", root, fsType, size>>10)
		}
	}

	done := waitStep(t, step, time.Minute)
	checkSucceeded(t, done)
	workDir := filepath.Join(pool.Spec.Runner.WorkingDirectory, strings.Trim(step, "{}"), "build")
	if workDir == filepath.Join(strings.Trim(step, "{}"), "build") {
		workDir = filepath.Join("/tmp", strings.Trim(step, "{}"), "build")
	}
	for _, line := range []string{"pwd=" + workDir, "input=" + content} {
		if !strings.Contains(done.Log, line+"\n") {
			t.Fatalf("the step's log lacks %q:\n%s", line, done.Log)
		}
	}
	if strings.Contains(done.Log, "hostname="+pod.Name+"\n") {
		t.Fatalf("the step ran in the pod's own container, not in a container of dind:\n%s", done.Log)
	}
	t.Logf("step log:\n%s", done.Log)

	// Recycled after its one step: a new pod, a new runner, nothing left of the old one.
	eventually(t, time.Minute, "the pod to be recycled after its step", func() (bool, string) {
		return podGone(t, pod), "pod " + pod.Name + " still there"
	})
	next := waitOnline(t, pool, 1)[0]
	if next.pod.UID == pod.UID {
		t.Fatalf("pod %s was not recycled after its step", pod.Name)
	}
	checkStopOrder(t, pod.Name, stop)
	eventually(t, time.Minute, "nothing of the recycled pod left on the node", func() (bool, string) {
		left := sys.ControlPlane.RealNode().Leftovers(pod.UID)
		return len(left) == 0, strings.Join(left, "; ")
	})
	t.Logf("pod %s recycled into %s after %s", pod.Name, next.pod.Name, time.Since(begin).Round(time.Millisecond))
}
