package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// evict asks the Eviction API to evict the pod, as `kubectl drain`, Karpenter and the
// cluster-autoscaler do.
func evict(t *testing.T, pod *corev1.Pod) error {
	t.Helper()
	return sys.Client.SubResource("eviction").Create(t.Context(), pod, &policyv1.Eviction{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
	})
}

func runnerPod(t *testing.T, runner *v1alpha1.Runner) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{}
	if err := sys.Client.Get(t.Context(), types.NamespacedName{Namespace: runner.Namespace, Name: runnerpod.PodName(runner)}, pod); err != nil {
		t.Fatalf("get pod of %s: %v", runner.Name, err)
	}
	return pod
}

func setUnschedulable(t *testing.T, node string, on bool) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"unschedulable":%t}}`, on)
	// Not the test's context: the cleanup that uncordons runs after it is cancelled.
	if err := sys.Client.Patch(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatalf("cordon %s=%t: %v", node, on, err)
	}
}

func TestABusyRunnerPodIsNotEvictedAndGoesAfterItsStepWhenItsNodeDrains(t *testing.T) {
	ns := namespace(t)
	const label = "evict"
	pool := harness.Pool(ns, label, 2, 3)
	pool.Spec.Scaling.IdleRunners = 0
	pool = createPool(t, pool)
	prefix := controllers.BitbucketNamePrefix(pool)
	runners := poolRunners(t, pool, 2)
	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 1, RunsOn: []string{label}, Duration: 40 * time.Second}); err != nil {
		t.Fatal(err)
	}
	var busy, idle *v1alpha1.Runner
	var busyPod *corev1.Pod
	eventually(t, 60*time.Second, "the busy runner's pod marked busy", func() (bool, string) {
		for i := range runners {
			pod := runnerPod(t, &runners[i])
			if pod.Labels[v1alpha1.LabelBusy] == "true" {
				busy, busyPod = &runners[i], pod
				idle = &runners[1-i]
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d busy in Bitbucket", busyRunners(prefix))
	})
	if busyPod.Annotations[v1alpha1.AnnotationSafeToEvict] != "false" || busyPod.Annotations[v1alpha1.AnnotationDoNotDisrupt] != "true" {
		t.Errorf("busy pod annotations %v; want safe-to-evict false and do-not-disrupt true", busyPod.Annotations)
	}
	idlePod := runnerPod(t, idle)
	if _, ok := idlePod.Labels[v1alpha1.LabelBusy]; ok || idlePod.Annotations[v1alpha1.AnnotationSafeToEvict] != "" {
		t.Errorf("idle pod is marked busy: %v %v", idlePod.Labels, idlePod.Annotations)
	}

	// The budget refuses the busy pod's eviction with 429, as it does for `kubectl drain`.
	eventually(t, 30*time.Second, "the eviction of the busy pod refused", func() (bool, string) {
		err := evict(t, busyPod)
		if err == nil {
			t.Fatal("the busy runner pod was evicted")
		}
		return apierrors.IsTooManyRequests(err), err.Error()
	})
	// An idle pod is not covered: it is evicted, and its runner gets a new pod.
	if err := evict(t, idlePod); err != nil {
		t.Fatalf("evict the idle pod: %v", err)
	}

	// Cordoning the busy pod's node, as `kubectl drain` does first, retires the runner at once:
	// disabled in Bitbucket while the step runs, so it takes no other.
	node := busyPod.Spec.NodeName
	setUnschedulable(t, node, true)
	t.Cleanup(func() { setUnschedulable(t, node, false) })
	eventually(t, 30*time.Second, "the busy runner retired", func() (bool, string) {
		r := &v1alpha1.Runner{}
		if err := sys.Client.Get(t.Context(), clientKey(busy), r); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(r.Status.Conditions, v1alpha1.ConditionRetiring)
		bb, _ := bbRunner(r.Status.UUID)
		if c == nil || c.Reason != controllers.ReasonNodeDraining || !bb.Disabled {
			return false, fmt.Sprintf("condition %+v, Bitbucket %+v", c, bb)
		}
		return true, ""
	})
	if s := stepsOf(label); len(s) != 1 || s[0].Status != "running" {
		t.Fatalf("steps %+v; want the step still running when the runner is retired", s)
	}
	if err := evict(t, busyPod); !apierrors.IsTooManyRequests(err) {
		t.Fatalf("evicting the busy pod of a retired runner: %v; want 429 until its step ends", err)
	}
	eventually(t, 90*time.Second, "the step done and the retired runner gone", func() (bool, string) {
		steps := stepsOf(label)
		if len(steps) != 1 || steps[0].Status != "completed" {
			return false, "step not done"
		}
		err := sys.Client.Get(t.Context(), clientKey(busyPod), &corev1.Pod{})
		if !apierrors.IsNotFound(err) {
			return false, "busy pod still there"
		}
		return apierrors.IsNotFound(sys.Client.Get(t.Context(), clientKey(busy), &v1alpha1.Runner{})), "Runner still there"
	})
	if s := stepsOf(label)[0]; s.Result != "SUCCESSFUL" {
		t.Fatalf("the step ended %s (%s): the drain killed a busy runner", s.Result, s.Reason)
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
}

// scheduleOf reads the pool's schedule status.
func scheduleOf(t *testing.T, pool *v1alpha1.RunnerPool) *v1alpha1.ScheduleStatus {
	return getPool(t, pool.Namespace, pool.Name).Status.Schedule
}

func TestASchedulePoolFollowsItsWindowAndKubectlScaleRaisesTheFloor(t *testing.T) {
	ns := namespace(t)
	const label = "schedule"
	pool := harness.Pool(ns, label, 0, 5)
	pool.Spec.Scaling.IdleRunners = 0
	// A window open now that closes at the next minute but one, in a zone far from UTC.
	loc, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().In(loc)
	end := now.Truncate(time.Minute).Add(2 * time.Minute)
	pool.Spec.Schedules = []v1alpha1.ScheduleWindow{{
		Name: "now", TimeZone: "Asia/Kolkata",
		Start: now.Add(-time.Hour).Format("15:04"), End: end.Format("15:04"),
		MinRunners: ptr.To[int32](2),
	}}
	pool = createPool(t, pool)
	poolRunners(t, pool, 2)
	st := scheduleOf(t, pool)
	if st == nil || st.Active != "now" || st.MinRunners != 2 || st.NextChange == nil || !st.NextChange.Time.Equal(end) {
		t.Fatalf("schedule status %+v; want window now, min 2, next change %s", st, end)
	}
	if c := condition(getPool(t, ns, pool.Name), v1alpha1.ConditionScheduled); c == nil || c.Reason != controllers.ReasonWindowActive {
		t.Errorf("Scheduled condition %+v; want WindowActive", c)
	}

	// kubectl scale sets spec.minRunners through the scale subresource: above the window's
	// minimum it wins.
	scale := &unstructured.Unstructured{}
	scale.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("RunnerPool"))
	scale.SetNamespace(ns)
	scale.SetName(pool.Name)
	if err := sys.Client.SubResource("scale").Patch(t.Context(), scale, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":3}}`))); err != nil {
		t.Fatalf("scale: %v", err)
	}
	poolRunners(t, pool, 3)

	// The window closes: the pool looks again at that moment and keeps the floor kubectl set.
	if err := sys.Client.SubResource("scale").Patch(t.Context(), scale, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":0}}`))); err != nil {
		t.Fatalf("scale: %v", err)
	}
	eventually(t, 3*time.Minute+30*time.Second, "the window closed and the pool at zero", func() (bool, string) {
		st := scheduleOf(t, pool)
		if st == nil || st.Active != "" || st.MinRunners != 0 {
			return false, fmt.Sprintf("schedule %+v", st)
		}
		return len(bbRunners(controllers.BitbucketNamePrefix(pool))) == 0, "runners left"
	})
	if c := condition(getPool(t, ns, pool.Name), v1alpha1.ConditionScheduled); c == nil || c.Reason != controllers.ReasonOutsideSchedules {
		t.Errorf("Scheduled condition %+v; want OutsideSchedules", c)
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
}
