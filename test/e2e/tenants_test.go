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

	// Named after the Secret: the registration stops before anything is registered. Named
	// after the pod: it registers, but leaves the pod alone instead of running there. Without
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
