package e2e

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/test/framework"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

func busyRunners(prefix string) int {
	n := 0
	for _, r := range bbRunners(prefix) {
		if r.Step != "" {
			n++
		}
	}
	return n
}

func TestDeletingAPoolWaitsForItsBusyRunnerToFinishItsStep(t *testing.T) {
	ns := namespace(t)
	const label = "busydelete"
	pool := harness.Pool(ns, label, 1, 1)
	pool = createPool(t, pool)
	prefix := controllers.BitbucketNamePrefix(pool)
	onlyRunner(t, ns, pool)
	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 1, RunsOn: []string{label}, Duration: 15 * time.Second}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the runner to take the step", func() (bool, string) {
		return busyRunners(prefix) == 1, "not busy yet"
	})
	if err := sys.Client.Delete(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the step to end", func() (bool, string) {
		steps := stepsOf(label)
		return len(steps) == 1 && steps[0].Status == "completed", fmt.Sprintf("%+v", steps)
	})
	if s := stepsOf(label)[0]; s.Result != "SUCCESSFUL" {
		t.Fatalf("the step ended %s (%s): deleting the pool killed a busy runner", s.Result, s.Reason)
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
	if n := len(bbRunners(prefix)); n != 0 {
		t.Errorf("%d Bitbucket runners left", n)
	}
}

func TestLoweringMaxDrainsBusyRunnersOnlyAfterTheirStep(t *testing.T) {
	ns := namespace(t)
	const label = "lowermax"
	pool := harness.Pool(ns, label, 0, 3)
	pool.Spec.Scaling.IdleRunners = 0
	pool.Spec.Scaling.Policy = v1alpha1.ScalingPolicyQueue
	pool.Spec.Scaling.Repositories = []string{bbsim.DefaultRepositoryUUID}
	pool = createPool(t, pool)
	prefix := controllers.BitbucketNamePrefix(pool)
	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 3, RunsOn: []string{label}, Duration: 15 * time.Second}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "3 busy runners", func() (bool, string) {
		n := busyRunners(prefix)
		return n == 3, fmt.Sprintf("%d busy", n)
	})
	patch := client.MergeFrom(pool.DeepCopy())
	pool.Spec.MaxRunners = 1
	if err := sys.Client.Patch(t.Context(), pool, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the pool to shrink to max", func() (bool, string) {
		n := len(bbRunners(prefix))
		return n <= 1, fmt.Sprintf("%d Bitbucket runners", n)
	})
	for _, s := range stepsOf(label) {
		if s.Result != "SUCCESSFUL" {
			t.Errorf("step %s ended %q (%s): lowering max killed a busy runner", s.UUID, s.Result, s.Reason)
		}
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
}

func TestABitbucketRunnerWithThePoolsMarkerButNoRunnerIsRemoved(t *testing.T) {
	ns := namespace(t)
	pool := harness.Pool(ns, "orphans", 1, 2)
	pool = createPool(t, pool)
	runner := onlyRunner(t, ns, pool)
	orphan, err := sys.BBSim.CreateRunner(bbsim.CreateRunnerRequest{
		Name:   controllers.BitbucketRunnerName(pool, "crashed-leftover"),
		Labels: []string{"self.hosted", "linux", "orphans"},
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the orphan to be deleted", func() (bool, string) {
		for _, r := range bbRunners(controllers.BitbucketNamePrefix(pool)) {
			if r.UUID == orphan.UUID {
				return false, "still there"
			}
		}
		return true, ""
	})
	if again := onlyRunner(t, ns, pool); again.Status.UUID != runner.Status.UUID {
		t.Errorf("the pool's own runner changed from %s to %s", runner.Status.UUID, again.Status.UUID)
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
}

func TestARunnerWhosePodCannotPullItsImageIsReplaced(t *testing.T) {
	ns := namespace(t)
	pool := harness.Pool(ns, "badimage", 1, 1)
	pool.Spec.Scaling.PendingTimeout = metav1.Duration{Duration: 30 * time.Second}
	pool = createPool(t, pool)
	runner := onlyRunner(t, ns, pool)
	pod := &corev1.Pod{}
	if err := sys.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: runnerpod.PodName(runner)}, pod); err != nil {
		t.Fatal(err)
	}
	// kwok never fails an image pull; write what the kubelet would.
	pod.Status.Phase = corev1.PodPending
	pod.Status.Conditions = nil
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "runner", Image: pod.Spec.Containers[0].Image,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}}}
	if err := sys.Client.Status().Update(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "the failing runner to be replaced", func() (bool, string) {
		var list v1alpha1.RunnerList
		countObjects(t, ns, &list, client.MatchingLabels{v1alpha1.LabelPool: pool.Name})
		for _, r := range list.Items {
			if r.Name != runner.Name && r.Status.Phase == v1alpha1.RunnerPhaseIdle {
				return len(list.Items) == 1, fmt.Sprintf("%d Runners", len(list.Items))
			}
		}
		return false, fmt.Sprintf("%d Runners", len(list.Items))
	})
	deleteAndWaitGone(t, pool, 60*time.Second)
}

// TestPodsThatDoNotFitAreReportedNotMultiplied is the overshoot scenario in small: a pool of at
// most 4 runners whose nodes have room for 2 runner pods, with 6 steps waiting.
func TestPodsThatDoNotFitAreReportedNotMultiplied(t *testing.T) {
	ns := namespace(t)
	const label = "overshoot"
	// 2 runner pods of 4Gi (docker) + 512Mi (runner) fit in 10Gi, a third does not.
	if _, err := sys.ControlPlane.CreateNodes(t.Context(), 1, resource.MustParse("16"), resource.MustParse("10Gi"),
		framework.WithNodeLabels(map[string]string{"pool": label})); err != nil {
		t.Fatal(err)
	}
	pool := harness.Pool(ns, label, 0, 4)
	pool.Spec.Scaling.Policy = v1alpha1.ScalingPolicyQueue
	pool.Spec.Scaling.IdleRunners = 0
	pool.Spec.Scaling.Repositories = []string{bbsim.DefaultRepositoryUUID}
	pool.Spec.Scaling.PendingTimeout = metav1.Duration{Duration: 30 * time.Second}
	pool.Spec.Template.NodeSelector = map[string]string{"pool": label}
	pool = createPool(t, pool)
	prefix := controllers.BitbucketNamePrefix(pool)
	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 6, RunsOn: []string{label}, Duration: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	peakRunners, peakPending := 0, 0
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var runners v1alpha1.RunnerList
		var pods corev1.PodList
		peakRunners = max(peakRunners, countObjects(t, ns, &runners, client.MatchingLabels{v1alpha1.LabelPool: pool.Name}), len(bbRunners(prefix)))
		countObjects(t, ns, &pods, client.MatchingLabels{v1alpha1.LabelPool: pool.Name})
		pending := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodPending {
				pending++
			}
		}
		peakPending = max(peakPending, pending)
		time.Sleep(500 * time.Millisecond)
	}
	if peakRunners > 4 {
		t.Errorf("peak of %d runners, above maxRunners 4", peakRunners)
	}
	if peakPending > 2 {
		t.Errorf("peak of %d Pending pods; the pool can only use 4 runners and 2 fit", peakPending)
	}
	if busy := busyRunners(prefix); busy != 2 {
		t.Errorf("%d busy runners, want the 2 that fit", busy)
	}
	eventually(t, 45*time.Second, "the pool to report pods pending", func() (bool, string) {
		c := condition(getPool(t, ns, pool.Name), v1alpha1.ConditionScalingActive)
		return c != nil && c.Reason == controllers.ReasonPodsPending, fmt.Sprintf("%+v", c)
	})
	// Stop the long steps so deleting the pool does not wait 10 minutes for them.
	for _, s := range stepsOf(label) {
		if s.Runner != "" {
			_ = sys.BBSim.DisconnectRunner(s.Runner)
		}
	}
	deleteAndWaitGone(t, pool, 90*time.Second)
}
