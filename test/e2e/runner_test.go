package e2e

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// onlyRunner waits for the pool to have exactly one ONLINE runner and returns its Runner.
func onlyRunner(t *testing.T, ns string, pool *v1alpha1.RunnerPool) *v1alpha1.Runner {
	t.Helper()
	var runner *v1alpha1.Runner
	eventually(t, 60*time.Second, "one Runner ONLINE", func() (bool, string) {
		var list v1alpha1.RunnerList
		countObjects(t, ns, &list, client.MatchingLabels{v1alpha1.LabelPool: pool.Name})
		bb := bbRunners(controllers.BitbucketNamePrefix(pool))
		if len(list.Items) != 1 || len(bb) != 1 || bb[0].Status != "ONLINE" || list.Items[0].Status.UUID != bb[0].UUID {
			return false, fmt.Sprintf("%d Runners, Bitbucket %+v", len(list.Items), bb)
		}
		runner = &list.Items[0]
		return true, ""
	})
	return runner
}

// crashBeforeStatus plays a crash of the operator after it registered the runner but before the
// runner's status was written: the operator stops, the status is emptied (and whatever else the
// crash lost is undone by lose), and the operator starts again.
func crashBeforeStatus(t *testing.T, runner *v1alpha1.Runner, lose func()) {
	t.Helper()
	if err := sys.StopManager(); err != nil {
		t.Fatal(err)
	}
	if lose != nil {
		lose()
	}
	runner.Status = v1alpha1.RunnerStatus{}
	if err := sys.Client.Status().Update(t.Context(), runner); err != nil {
		t.Fatal(err)
	}
	if err := sys.StartManager(testLogger()); err != nil {
		t.Fatal(err)
	}
}

func TestARestartedOperatorAdoptsTheRunnerItRegisteredBeforeItCrashed(t *testing.T) {
	ns := namespace(t)
	pool := harness.Pool(ns, "adopt", 1, 1)
	pool = createPool(t, pool)
	runner := onlyRunner(t, ns, pool)
	uuid := runner.Status.UUID

	// The crash window: registered in Bitbucket and the Secret written, but the UUID never made
	// it into the status.
	crashBeforeStatus(t, runner, nil)

	runner = onlyRunner(t, ns, pool)
	if runner.Status.UUID != uuid {
		t.Fatalf("the restarted operator registered %s instead of adopting %s", runner.Status.UUID, uuid)
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
}

func TestARunnerWhoseCredentialsWereLostIsReplacedNotLeaked(t *testing.T) {
	ns := namespace(t)
	pool := harness.Pool(ns, "lost", 1, 1)
	pool = createPool(t, pool)
	runner := onlyRunner(t, ns, pool)
	uuid := runner.Status.UUID

	// A crash right after the Bitbucket create: the one-time OAuth secret is gone for good.
	crashBeforeStatus(t, runner, func() {
		secret := &corev1.Secret{}
		secret.Namespace, secret.Name = ns, runnerpod.SecretName(runner)
		if err := sys.Client.Delete(t.Context(), secret); err != nil {
			t.Fatal(err)
		}
	})

	runner = onlyRunner(t, ns, pool)
	if runner.Status.UUID == uuid {
		t.Fatalf("runner %s kept without its credentials", uuid)
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
}

func TestAPodThatEndedIsReplacedAndKeepsItsBitbucketRunner(t *testing.T) {
	ns := namespace(t)
	pool := harness.Pool(ns, "ended", 1, 1)
	pool = createPool(t, pool)
	runner := onlyRunner(t, ns, pool)
	pod := &corev1.Pod{}
	if err := sys.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: runnerpod.PodName(runner)}, pod); err != nil {
		t.Fatal(err)
	}
	oldUID := pod.UID
	pod.Status.Phase = corev1.PodFailed
	pod.Status.Reason = "Evicted"
	if err := sys.Client.Status().Update(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "a new pod for the same runner", func() (bool, string) {
		err := sys.Client.Get(t.Context(), client.ObjectKeyFromObject(pod), pod)
		return err == nil && pod.UID != oldUID && pod.Status.Phase == corev1.PodRunning, fmt.Sprintf("pod %s %s err %v", pod.UID, pod.Status.Phase, err)
	})
	again := onlyRunner(t, ns, pool)
	if again.Status.UUID != runner.Status.UUID {
		t.Errorf("the Bitbucket runner changed from %s to %s; a new pod should reuse it", runner.Status.UUID, again.Status.UUID)
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
}
