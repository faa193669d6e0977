package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/test/framework"
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

// A registration whose Bitbucket runner went away before its UUID was saved leaves a Secret that
// the next registration finds in its way when it creates its own: the Secret is replaced, and
// the new runner is the only one.
func TestTheSecretOfARegistrationThatVanishedIsReplaced(t *testing.T) {
	ns := namespace(t)
	pool := createPool(t, harness.Pool(ns, "vanished", 1, 1))
	runner := onlyRunner(t, ns, pool)
	uuid := runner.Status.UUID

	crashBeforeStatus(t, runner, func() {
		if err := budgetClient(t).DeleteRunner(t.Context(), bitbucket.Scope{Workspace: string(runner.Spec.Workspace)}, uuid); err != nil {
			t.Fatal(err)
		}
	})

	runner = onlyRunner(t, ns, pool)
	if runner.Status.UUID == uuid {
		t.Fatalf("runner %s kept although it is gone from Bitbucket", uuid)
	}
	secret := &corev1.Secret{}
	if err := sys.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: runnerpod.SecretName(runner)}, secret); err != nil {
		t.Fatal(err)
	}
	if got := secret.Annotations[v1alpha1.AnnotationRunnerUUID]; got != runner.Status.UUID {
		t.Errorf("the runner Secret names runner %s, the Runner %s", got, runner.Status.UUID)
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

// TestARunnerPodThatEndsAtOnceIsRecreatedWithGrowingGapsNotInALoop ends every pod of a runner
// before its agent connects, as a runner container that crashes at start would: the first pod is
// replaced at once, the next ones 10 s, then 20 s after the last, the Runner says so, and once a
// pod works the count is cleared.
func TestARunnerPodThatEndsAtOnceIsRecreatedWithGrowingGapsNotInALoop(t *testing.T) {
	ns := namespace(t)
	const nodeLabel = "e2e.runnerpool.dev/pod-backoff"
	pool := harness.Pool(ns, "podloop", 1, 1)
	// No node has the label yet, so the pods stay Pending and no agent connects; the test ends
	// them as the kubelet would. A long pending timeout keeps the pool from replacing the Runner.
	pool.Spec.Template.NodeSelector = map[string]string{nodeLabel: ns}
	pool.Spec.Scaling.PendingTimeout = metav1.Duration{Duration: 10 * time.Minute}
	pool = createPool(t, pool)

	var runner v1alpha1.Runner
	eventually(t, 60*time.Second, "a registered Runner", func() (bool, string) {
		var list v1alpha1.RunnerList
		countObjects(t, ns, &list, client.MatchingLabels{v1alpha1.LabelPool: pool.Name})
		if len(list.Items) != 1 || list.Items[0].Status.UUID == "" {
			return false, fmt.Sprintf("%d Runners", len(list.Items))
		}
		runner = list.Items[0]
		return true, ""
	})
	podKey := client.ObjectKey{Namespace: ns, Name: runnerpod.PodName(&runner)}
	var created []time.Time // when each pod of the runner was created
	var lastUID types.UID
	// endNextPod waits for a pod newer than the last and ends it: the runner container exits 1.
	endNextPod := func(end bool) {
		t.Helper()
		eventually(t, 90*time.Second, fmt.Sprintf("pod %d", len(created)+1), func() (bool, string) {
			pod := &corev1.Pod{}
			if err := sys.Client.Get(t.Context(), podKey, pod); err != nil || pod.UID == lastUID || !pod.DeletionTimestamp.IsZero() {
				return false, fmt.Sprintf("err %v", err)
			}
			if end {
				pod.Status.Phase = corev1.PodFailed
				pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "runner", Image: pod.Spec.Containers[0].Image,
					State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}}}
				if err := sys.Client.Status().Update(t.Context(), pod); err != nil {
					return false, fmt.Sprintf("end pod: %v", err) // the scheduler wrote meanwhile: again
				}
			}
			lastUID = pod.UID
			created = append(created, pod.CreationTimestamp.Time)
			return true, ""
		})
	}
	for range 3 {
		endNextPod(true)
	}
	// While the fourth waits, the Runner says why and for how long.
	eventually(t, 30*time.Second, "PodReady=False PodRestartBackoff", func() (bool, string) {
		r := &v1alpha1.Runner{}
		if err := sys.Client.Get(t.Context(), client.ObjectKeyFromObject(&runner), r); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(r.Status.Conditions, v1alpha1.ConditionPodReady)
		if c == nil || c.Reason != controllers.ReasonPodRestartBackoff {
			return false, fmt.Sprintf("PodReady %+v", c)
		}
		if !strings.Contains(c.Message, "exit code 1") || !strings.Contains(c.Message, "3 pods in a row") {
			t.Errorf("the PodReady message %q does not say how the last pod ended and how many did", c.Message)
		}
		if r.Status.PodRestarts != 2 || r.Status.NextPodTime == nil || r.Status.Phase != v1alpha1.RunnerPhaseFailed {
			t.Errorf("status podRestarts %d, nextPodTime %v, phase %s; want 2, set, Failed", r.Status.PodRestarts, r.Status.NextPodTime, r.Status.Phase)
		}
		return true, ""
	})
	if ev := events(t, ns, runner.Name); !slices.ContainsFunc(ev, func(e string) bool { return strings.HasPrefix(e, controllers.ReasonPodRestartBackoff+":") }) {
		t.Errorf("no %s event among %v", controllers.ReasonPodRestartBackoff, ev)
	}

	// The cause is fixed: a node gets the label, the fourth pod runs and its agent connects.
	var nodes corev1.NodeList
	if err := sys.Client.List(t.Context(), &nodes); err != nil || len(nodes.Items) == 0 {
		t.Fatalf("list nodes: %v (%d)", err, len(nodes.Items))
	}
	node := &nodes.Items[0]
	for i := range nodes.Items {
		if nodes.Items[i].Annotations[framework.FakeNodeAnnotation] == framework.FakeNodeAnnotationValue {
			node = &nodes.Items[i]
			break
		}
	}
	label := func(set bool) error {
		patch := client.MergeFrom(node.DeepCopy())
		if set {
			node.Labels[nodeLabel] = ns
		} else {
			delete(node.Labels, nodeLabel)
		}
		return sys.Client.Patch(t.Context(), node, patch)
	}
	if err := label(true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sys.Client.Get(t.Context(), client.ObjectKeyFromObject(node), node); err == nil {
			_ = label(false)
		}
	})
	endNextPod(false)
	first, second := created[2].Sub(created[1]), created[3].Sub(created[2])
	t.Logf("pods created %s apart", []time.Duration{created[1].Sub(created[0]), first, second})
	// Creation times are to the second, and so is the recorded next time.
	if first < 8*time.Second || second < 18*time.Second || second <= first {
		t.Errorf("pods created %s then %s after the one before; want about 10 s then 20 s", first, second)
	}
	eventually(t, 90*time.Second, "the runner ONLINE with its count cleared", func() (bool, string) {
		r := &v1alpha1.Runner{}
		if err := sys.Client.Get(t.Context(), client.ObjectKeyFromObject(&runner), r); err != nil {
			return false, err.Error()
		}
		st := r.Status
		return st.Phase == v1alpha1.RunnerPhaseIdle && st.PodRestarts == 0 && st.NextPodTime == nil,
			fmt.Sprintf("phase %s, podRestarts %d, nextPodTime %v", st.Phase, st.PodRestarts, st.NextPodTime)
	})
	pod := &corev1.Pod{}
	if err := sys.Client.Get(t.Context(), podKey, pod); err != nil || pod.UID != lastUID {
		t.Errorf("the pod that works was replaced (err %v)", err)
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
}

// TestAPoolDeletedRightAfterACrashLeavesNoBitbucketRunner plays the crash window of registration
// (Bitbucket runner and Secret made, status not written) followed by the pool's deletion: the
// Runner is drained and deleted without ever being adopted, and must still unregister its
// Bitbucket runner, which the Secret it controls records. Found by `make chaos` (a leader killed
// while a pool was being deleted left an UNREGISTERED runner behind).
func TestAPoolDeletedRightAfterACrashLeavesNoBitbucketRunner(t *testing.T) {
	ns := namespace(t)
	pool := harness.Pool(ns, "crashdel", 1, 1)
	pool = createPool(t, pool)
	runner := onlyRunner(t, ns, pool)
	crashBeforeStatus(t, runner, func() {
		// The pool was being deleted and had set the Runner to drain: nothing registers it again.
		if err := sys.Client.Delete(t.Context(), pool); err != nil {
			t.Fatal(err)
		}
		runner.Spec.Drain = true
		if err := sys.Client.Update(t.Context(), runner); err != nil {
			t.Fatal(err)
		}
	})
	deleteAndWaitGone(t, pool, 90*time.Second)
	eventually(t, 30*time.Second, "no Bitbucket runner of the pool", func() (bool, string) {
		bb := bbRunners(controllers.BitbucketNamePrefix(pool))
		return len(bb) == 0, fmt.Sprintf("%+v", bb)
	})
}
