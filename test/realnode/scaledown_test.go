package realnode

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
)

// Scaling down stops only idle runners, each gracefully: the runner container ends first and
// dind last, and the pod leaves no container, mount nor cgroup on the node. A runner busy with
// a long step is never stopped under it: its step completes successfully, and only then does
// its pod go.
func TestScaleDownStopsIdleRunnersGracefullyNeverBusyOnes(t *testing.T) {
	begin := time.Now()
	defer func() { t.Logf("took %s", time.Since(begin).Round(time.Millisecond)) }()
	ns := namespace(t)
	dumpOnFailure(t, ns)
	pool := realPool(ns, "scale", 2, 2)
	pool.Spec.Scaling.IdleRunners = 0
	createPool(t, pool)
	pods := waitOnline(t, pool, 2)
	t.Logf("2 runners ONLINE after %s", time.Since(begin).Round(time.Millisecond))
	stops := map[string]<-chan stopOrder{}
	for _, rp := range pods {
		stops[rp.pod.Name] = watchStop(t, rp.pod)
	}

	step := enqueue(t, pool, "echo started\nsleep 20\necho finished", nil)
	busyRunner := waitStepRunning(t, step)
	var busy, idle *corev1.Pod
	for _, rp := range pods {
		if rp.runner.UUID == busyRunner {
			busy = rp.pod
		} else {
			idle = rp.pod
		}
	}
	if busy == nil {
		t.Fatalf("step %s runs on runner %s, which is none of the pool's", step, busyRunner)
	}

	// Down to at most one runner, and none kept idle: only the idle runner may go now.
	patch := client.MergeFrom(pool.DeepCopy())
	pool.Spec.MinRunners, pool.Spec.MaxRunners = 0, 1
	if err := sys.Client.Patch(t.Context(), pool, patch); err != nil {
		t.Fatal(err)
	}
	idleGone := time.Duration(0)
	eventually(t, time.Minute, "the step to complete, the idle runner's pod gone and the busy one kept", func() (bool, string) {
		step, err := sys.BBSim.Step(step)
		if err != nil {
			return false, err.Error()
		}
		current := &corev1.Pod{}
		err = sys.Client.Get(t.Context(), client.ObjectKeyFromObject(busy), current)
		if step.Status != "completed" && (err != nil || current.DeletionTimestamp != nil) {
			t.Fatalf("the busy runner's pod %s is going (%v) while its step %s is %s", busy.Name, err, step.UUID, step.Status)
		}
		if idleGone == 0 && podGone(t, idle) {
			idleGone = time.Since(begin)
		}
		return step.Status == "completed" && idleGone != 0, fmt.Sprintf("step %s, idle pod gone %v", step.Status, idleGone != 0)
	})
	done := waitStep(t, step, time.Second)
	checkSucceeded(t, done)
	if !strings.Contains(done.Log, "finished\n") {
		t.Fatalf("the long step did not run to its end:\n%s", done.Log)
	}
	t.Logf("idle pod %s gone after %s; step on the busy runner completed %s", idle.Name, idleGone.Round(time.Millisecond), done.Result)

	// Idle now, the last runner goes too.
	eventually(t, time.Minute, "the last runner's pod to go", func() (bool, string) {
		return podGone(t, busy), "pod " + busy.Name + " still there"
	})
	for _, rp := range pods {
		checkStopOrder(t, rp.pod.Name, stops[rp.pod.Name])
	}
	node := sys.ControlPlane.RealNode()
	eventually(t, time.Minute, "nothing of the runner pods left on the node", func() (bool, string) {
		left := node.Leftovers(busy.UID, idle.UID)
		return len(left) == 0, strings.Join(left, "; ")
	})
}

// stopOrder is how a pod's containers ended, as seen on the node.
type stopOrder struct {
	runnerEnded, dindEnded time.Time
	// dindOutlivedRunner is set when the runner had no process left while dind still had.
	dindOutlivedRunner bool
	err                string
}

// watchStop follows a running runner pod's containers on the node, by the processes of their
// cgroups, until both have ended, and reports the order. The kubelet's own timestamps have a
// resolution of a second, too coarse to order a runner and a daemon that stop within it.
func watchStop(t *testing.T, pod *corev1.Pod) <-chan stopOrder {
	t.Helper()
	pod = getPod(t, pod)
	runnerCgroup := containerCgroup(pod.UID, containerID(statusOf(t, pod, runnerpod.RunnerContainerName)))
	dindCgroup := containerCgroup(pod.UID, containerID(statusOf(t, pod, runnerpod.DockerContainerName)))
	if runnerCgroup == "" || dindCgroup == "" {
		t.Fatalf("pod %s: containers' cgroups not found on the node", pod.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	out := make(chan stopOrder, 1)
	go func() {
		defer cancel()
		var order stopOrder
		defer func() { out <- order }()
		for ctx.Err() == nil {
			runner, dind := len(cgroupProcs(runnerCgroup)), len(cgroupTreeProcs(dindCgroup))
			now := time.Now()
			if runner == 0 && order.runnerEnded.IsZero() {
				order.runnerEnded = now
			}
			if dind == 0 && order.dindEnded.IsZero() {
				order.dindEnded = now
			}
			if runner == 0 && dind > 0 {
				order.dindOutlivedRunner = true
			}
			if !order.runnerEnded.IsZero() && !order.dindEnded.IsZero() {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		order.err = "the containers did not end within 5 minutes"
	}()
	return out
}

// checkStopOrder fails unless the runner container ended before dind.
func checkStopOrder(t *testing.T, pod string, stop <-chan stopOrder) {
	t.Helper()
	var order stopOrder
	select {
	case order = <-stop:
	case <-time.After(30 * time.Second):
		t.Fatalf("pod %s: its containers are still running", pod)
	}
	switch {
	case order.err != "":
		t.Fatalf("pod %s: %s", pod, order.err)
	case !order.dindOutlivedRunner || order.dindEnded.Before(order.runnerEnded):
		t.Fatalf("pod %s: dind ended at %s, the runner at %s: dind did not stop last", pod,
			order.dindEnded.Format(time.StampMilli), order.runnerEnded.Format(time.StampMilli))
	}
	t.Logf("pod %s: the runner ended, then dind %s later", pod, order.dindEnded.Sub(order.runnerEnded).Round(time.Millisecond))
}
