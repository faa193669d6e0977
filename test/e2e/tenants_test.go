package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// forgedRunner is a Runner written by hand, as anyone allowed to write Runners in a namespace
// can, with the pool as its controller.
func forgedRunner(t *testing.T, pool *v1alpha1.RunnerPool, name string, edit func(*v1alpha1.Runner)) *v1alpha1.Runner {
	t.Helper()
	r := &v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: pool.Namespace, Labels: map[string]string{v1alpha1.LabelPool: pool.Name}},
		Spec: v1alpha1.RunnerSpec{
			Workspace:     pool.Spec.Bitbucket.Workspace,
			BitbucketName: controllers.BitbucketRunnerName(pool, name),
			Labels:        []v1alpha1.RunnerLabel{"self.hosted", "linux"},
		},
	}
	if err := controllerutil.SetControllerReference(pool, r, sys.Client.Scheme()); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(r)
	}
	if err := sys.Client.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	return r
}

// expectRunnerCondition waits for the Runner's condition to show the reason, and for its event.
func expectRunnerCondition(t *testing.T, r *v1alpha1.Runner, condType, reason string) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%s %s=False %s", r.Name, condType, reason), func() (bool, string) {
		got := &v1alpha1.Runner{}
		if err := sys.Client.Get(t.Context(), clientKey(r), got); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(got.Status.Conditions, condType)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == reason, fmt.Sprintf("%+v", got.Status.Conditions)
	})
	expectRunnerEvent(t, r, reason)
}

// expectRunnerEvent waits for a warning event about the Runner with the reason.
func expectRunnerEvent(t *testing.T, r *v1alpha1.Runner, reason string) {
	t.Helper()
	eventually(t, 30*time.Second, "a warning event "+reason, func() (bool, string) {
		ev := events(t, r.Namespace, r.Name)
		return slices.ContainsFunc(ev, func(e string) bool { return strings.HasPrefix(e, reason+":") }), fmt.Sprint(ev)
	})
}

// TestARunnerOutsideItsPoolsScopeTouchesNothingInBitbucket forges Runners in one tenant's
// namespace that name another scope, or another pool's Bitbucket runner: each is refused with a
// condition and an event, and the other tenant's runner stays registered, enabled and ONLINE.
func TestARunnerOutsideItsPoolsScopeTouchesNothingInBitbucket(t *testing.T) {
	victimNS := namespace(t)
	victim := createPool(t, harness.Pool(victimNS, "victim", 1, 1))
	victimRunner := onlyRunner(t, victimNS, victim)

	hostileNS := victimNS + "-h"
	if err := sys.CreateNamespace(t.Context(), hostileNS); err != nil {
		t.Fatal(err)
	}
	hostile := createPool(t, harness.Pool(hostileNS, "hostile", 1, 1))
	hostileRunner := onlyRunner(t, hostileNS, hostile)

	otherRepo := forgedRunner(t, hostile, "other-repo", func(r *v1alpha1.Runner) { r.Spec.Repository = secondRepositoryUUID })
	otherName := forgedRunner(t, hostile, "other-name", func(r *v1alpha1.Runner) { r.Spec.BitbucketName = victimRunner.Spec.BitbucketName })
	expectRunnerCondition(t, otherRepo, v1alpha1.ConditionRegistered, controllers.ReasonOutOfScope)
	expectRunnerCondition(t, otherName, v1alpha1.ConditionRegistered, controllers.ReasonOutOfScope)
	for _, name := range []string{otherRepo.Spec.BitbucketName, "other-repo"} {
		for _, r := range sys.BBSim.State().Runners {
			if strings.Contains(r.Name, name) {
				t.Errorf("Bitbucket runner %s (%s) registered for a Runner outside its pool's scope", r.Name, r.UUID)
			}
		}
	}

	// The hostile pool's own Runner is pointed at the victim's Bitbucket runner by a status
	// written by hand, then deleted: the victim's runner is neither disabled nor deleted.
	patch := client.MergeFrom(hostileRunner.DeepCopy())
	hostileRunner.Status.UUID = victimRunner.Status.UUID
	if err := sys.Client.Status().Patch(t.Context(), hostileRunner, patch); err != nil {
		t.Fatal(err)
	}
	expectRunnerCondition(t, hostileRunner, v1alpha1.ConditionRegistered, controllers.ReasonOutOfScope)
	for _, r := range []*v1alpha1.Runner{hostileRunner, otherRepo, otherName} {
		deleteAndWaitGone(t, r, 60*time.Second)
	}
	// The pool replaces its Runner; the victim's runner is still there, enabled and ONLINE.
	onlyRunner(t, hostileNS, hostile)
	bb, ok := bbRunner(victimRunner.Status.UUID)
	if !ok || bb.Disabled || bb.Status != "ONLINE" {
		t.Errorf("the victim's runner is %+v (found %t), want it ONLINE and enabled", bb, ok)
	}
	if again := onlyRunner(t, victimNS, victim); again.Status.UUID != victimRunner.Status.UUID {
		t.Errorf("the victim's runner changed from %s to %s", victimRunner.Status.UUID, again.Status.UUID)
	}
	deleteAndWaitGone(t, hostile, 60*time.Second)
	deleteAndWaitGone(t, victim, 60*time.Second)
}

// TestARunnerLeavesAPodAndSecretItDoesNotControlAlone names a Runner after a pod and a Secret
// someone else owns: it reports them and never deletes them, not even when it goes.
func TestARunnerLeavesAPodAndSecretItDoesNotControlAlone(t *testing.T) {
	ns := namespace(t)
	pool := harness.Pool(ns, "bystander", 0, 1)
	pool.Spec.Scaling.IdleRunners = 0 // no runner of its own: every Bitbucket runner is the test's
	pool = createPool(t, pool)

	podOwner := &v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: runnerpod.PodName(podOwner), Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
	}
	secretOwner := &v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns}}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: runnerpod.SecretName(secretOwner), Namespace: ns},
		StringData: map[string]string{"password": "not-the-runners"},
	}
	for _, obj := range []client.Object{pod, secret} {
		if err := sys.Client.Create(t.Context(), obj); err != nil {
			t.Fatal(err)
		}
	}

	// Named after the Secret: the registration finds the Secret in the way of its own, removes
	// the Bitbucket runner it just made and stops. Named after the pod: it registers, but leaves
	// the pod alone instead of running there. Without
	// the pool's label the pool does not count them, so it neither drains nor replaces them
	// while the test looks.
	unlabelled := func(r *v1alpha1.Runner) { r.Labels = map[string]string{v1alpha1.LabelPool: "someone-else"} }
	bySecret := forgedRunner(t, pool, secretOwner.Name, unlabelled)
	byPod := forgedRunner(t, pool, podOwner.Name, unlabelled)
	expectRunnerCondition(t, bySecret, v1alpha1.ConditionRegistered, controllers.ReasonNotControlled)
	expectRunnerCondition(t, byPod, v1alpha1.ConditionPodReady, controllers.ReasonNotControlled)

	for _, r := range []*v1alpha1.Runner{bySecret, byPod} {
		deleteAndWaitGone(t, r, 60*time.Second)
	}
	for _, obj := range []client.Object{pod, secret} {
		err := sys.Client.Get(t.Context(), clientKey(obj), obj)
		if apierrors.IsNotFound(err) || (err == nil && !obj.GetDeletionTimestamp().IsZero()) {
			t.Errorf("%T %s was deleted by a Runner that does not control it", obj, obj.GetName())
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if n := len(bbRunners(controllers.BitbucketNamePrefix(pool))); n != 0 {
		t.Errorf("%d Bitbucket runners left behind", n)
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
}

// TestAPoolWithBadCredentialsSeesNothingAndTakesNoStep puts two tenants' Queue pools with the
// same labels on one workspace, one of them with a wrong client secret: the other's list and
// queue are fresh in the operator's caches, yet the bad pool reads none of them, is given no
// step and shows CredentialsValid=False, while the good pool runs every step.
func TestAPoolWithBadCredentialsSeesNothingAndTakesNoStep(t *testing.T) {
	const label = "sharedlabel"
	queuePool := func(ns, name string) *v1alpha1.RunnerPool {
		p := harness.Pool(ns, name, 0, 3)
		p.Spec.Labels = []v1alpha1.RunnerLabel{label}
		p.Spec.Scaling.IdleRunners = 0
		p.Spec.Scaling.Policy = v1alpha1.ScalingPolicyQueue
		p.Spec.Scaling.Repositories = []string{bbsim.DefaultRepositoryUUID}
		return p
	}
	goodNS := namespace(t)
	good := createPool(t, queuePool(goodNS, "good"))
	eventually(t, 30*time.Second, "the good pool to observe Bitbucket", func() (bool, string) {
		p := getPool(t, goodNS, good.Name)
		c := condition(p, v1alpha1.ConditionCredentialsValid)
		return c != nil && c.Status == "True" && p.Status.LastObservedTime != nil, fmt.Sprintf("%+v", c)
	})

	badNS := goodNS + "-bad"
	if err := sys.CreateNamespace(t.Context(), badNS); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "wrong", Namespace: badNS}, StringData: map[string]string{
		v1alpha1.SecretKeyClientID: bbsim.DefaultClientID, v1alpha1.SecretKeyClientSecret: "a-wrong-secret"}}
	if err := sys.Client.Create(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	badSpec := queuePool(badNS, "bad")
	badSpec.Spec.Bitbucket.CredentialsSecretRef.Name = secret.Name
	bad := createPool(t, badSpec)

	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 3, RunsOn: []string{label}, Duration: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 120*time.Second, "every step to run on the good pool's runners", func() (bool, string) {
		steps := stepsOf(label)
		done := 0
		for _, s := range steps {
			if s.Status == "completed" && s.Result == "SUCCESSFUL" {
				done++
			}
		}
		return done == 3, fmt.Sprintf("%d of %d steps done", done, len(steps))
	})

	p := getPool(t, badNS, bad.Name)
	if c := condition(p, v1alpha1.ConditionCredentialsValid); c == nil || c.Status != "False" {
		t.Errorf("the bad pool's CredentialsValid = %+v, want False", c)
	}
	if p.Status.LastObservedTime != nil || p.Status.Queued != 0 || p.Status.Desired != 0 || p.Status.Replicas != 0 {
		t.Errorf("the bad pool saw something: lastObserved %v, queued %d, desired %d, replicas %d",
			p.Status.LastObservedTime, p.Status.Queued, p.Status.Desired, p.Status.Replicas)
	}
	if n := countObjects(t, badNS, &v1alpha1.RunnerList{}, nil); n != 0 {
		t.Errorf("the bad pool has %d Runners", n)
	}
	if n := len(bbRunners(controllers.BitbucketNamePrefix(bad))); n != 0 {
		t.Errorf("%d Bitbucket runners registered for the bad pool", n)
	}
	deleteAndWaitGone(t, bad, 60*time.Second)
	deleteAndWaitGone(t, good, 60*time.Second)
}

// TestRunnersThatFailToStartAreReplacedOneAtATimeWithBackoff breaks every pod of a pool at once
// (an image that cannot be pulled): the pool replaces one runner, waits, then the next, and
// records the backoff on the pool where a restarted operator finds it.
func TestRunnersThatFailToStartAreReplacedOneAtATimeWithBackoff(t *testing.T) {
	ns := namespace(t)
	pool := harness.Pool(ns, "crashloop", 3, 3)
	pool.Spec.Scaling.IdleRunners = 0
	pool = createPool(t, pool)
	var first []string
	eventually(t, 90*time.Second, "3 runners ONLINE", func() (bool, string) {
		var list v1alpha1.RunnerList
		countObjects(t, ns, &list, client.MatchingLabels{v1alpha1.LabelPool: pool.Name})
		first = first[:0]
		for _, r := range list.Items {
			if r.Status.Phase == v1alpha1.RunnerPhaseIdle {
				first = append(first, r.Name)
			}
		}
		return len(first) == 3, fmt.Sprintf("%d idle of %d", len(first), len(list.Items))
	})
	for _, name := range first {
		pod := &corev1.Pod{}
		if err := sys.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, pod); err != nil {
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
	}
	remaining := func() int {
		n := 0
		for _, name := range first {
			r := &v1alpha1.Runner{}
			if err := sys.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, r); err == nil && r.DeletionTimestamp.IsZero() {
				n++
			}
		}
		return n
	}
	eventually(t, 60*time.Second, "the first failed runner to be replaced", func() (bool, string) {
		n := remaining()
		return n < 3, fmt.Sprintf("%d of the failed runners left", n)
	})
	replacedAt := time.Now()
	if n := remaining(); n != 2 {
		t.Errorf("%d of the 3 failed runners left right after the first replacement, want 2: replaced all at once", n)
	}
	if v := getPool(t, ns, pool.Name).Annotations[v1alpha1.AnnotationReplaceBackoff]; !strings.HasPrefix(v, "1/") {
		t.Errorf("replace-backoff annotation = %q, want one failure recorded", v)
	}
	eventually(t, 30*time.Second, "a ReplaceBackoff event", func() (bool, string) {
		ev := events(t, ns, pool.Name)
		return slices.ContainsFunc(ev, func(e string) bool { return strings.HasPrefix(e, controllers.ReasonReplaceBackoff+":") }), fmt.Sprint(ev)
	})
	eventually(t, 120*time.Second, "every failed runner to be replaced", func() (bool, string) {
		n := remaining()
		return n == 0, fmt.Sprintf("%d of the failed runners left", n)
	})
	// 10 s after the first, 20 s after the second: the last one goes 30 s after the first at
	// the earliest.
	if took := time.Since(replacedAt); took < 25*time.Second {
		t.Errorf("the three failed runners were replaced within %s of the first: no backoff", took)
	}
	deleteAndWaitGone(t, pool, 90*time.Second)
}

// TestWakesWaitForThePollOnceHalfTheBudgetIsSpent requests polls of a pool (as a webhook does)
// before and after half of its credential's hourly budget is spent: the first is served at once,
// the second waits for the pool's own poll.
func TestWakesWaitForThePollOnceHalfTheBudgetIsSpent(t *testing.T) {
	ns := namespace(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "wake-budget", Namespace: ns},
		StringData: map[string]string{v1alpha1.SecretKeyAccessToken: wakeBudgetToken}}
	if err := sys.Client.Create(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	spec := queuePool(ns, "wakebudget", bbsim.DefaultRepositoryUUID)
	spec.Spec.Bitbucket.CredentialsSecretRef.Name = secret.Name
	spec.Spec.Scaling.PollInterval = metav1.Duration{Duration: 5 * time.Minute}
	pool := createPool(t, spec)
	observed := func() time.Time {
		if at := getPool(t, ns, pool.Name).Status.LastObservedTime; at != nil {
			return at.Time
		}
		return time.Time{}
	}
	requestPoll := func() time.Time {
		t.Helper()
		p := getPool(t, ns, pool.Name)
		patch := client.MergeFrom(p.DeepCopy())
		now := time.Now()
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[v1alpha1.AnnotationPollRequested] = now.UTC().Format(time.RFC3339Nano)
		if err := sys.Client.Patch(t.Context(), p, patch); err != nil {
			t.Fatal(err)
		}
		return now
	}
	eventually(t, 30*time.Second, "the first observation", func() (bool, string) { return !observed().IsZero(), "none yet" })
	time.Sleep(1100 * time.Millisecond) // observations are kept to the second
	requested := requestPoll()
	eventually(t, 30*time.Second, "a requested poll to be served at once", func() (bool, string) {
		return !observed().Before(requested.Truncate(time.Second)), fmt.Sprintf("last observed %s", observed())
	})

	// Spend just over half of the credential's hourly budget, as a flood of wakes would.
	spender, err := bitbucket.New(bitbucket.Config{BaseURL: sys.BBSimURL, Credentials: bitbucket.Credentials{AccessToken: wakeBudgetToken}, Budgets: sys.Budgets})
	if err != nil {
		t.Fatal(err)
	}
	for spender.Budget().Remaining() > spender.Budget().Limit()/2-5 {
		if _, err := spender.ListRunners(t.Context(), bitbucket.Scope{Workspace: bbsim.DefaultWorkspaceUUID}); err != nil {
			t.Fatal(err)
		}
	}
	before := observed()
	time.Sleep(1100 * time.Millisecond)
	requestPoll()
	time.Sleep(15 * time.Second)
	if after := observed(); after.After(before) {
		t.Errorf("a requested poll read Bitbucket at %s with half the budget spent (last observation before: %s); it should wait for the poll", after, before)
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
}
