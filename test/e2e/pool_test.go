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
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

func TestAPoolOfThreeComesUpAndDeletingItLeavesNothingBehind(t *testing.T) {
	ns := namespace(t)
	pool := harness.Pool(ns, "builds", 3, 5)
	pool.Spec.Scaling.IdleRunners = 0 // exactly minRunners: no idle buffer on top
	if err := sys.Client.Create(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	pool = getPool(t, ns, "builds")
	prefix := controllers.BitbucketNamePrefix(pool)
	inPool := client.MatchingLabels{v1alpha1.LabelPool: "builds"}

	eventually(t, 90*time.Second, "3 Bitbucket runners ONLINE", func() (bool, string) {
		online := 0
		runners := bbRunners(prefix)
		for _, r := range runners {
			if r.Status == "ONLINE" {
				online++
			}
		}
		return online == 3 && len(runners) == 3, fmt.Sprintf("%d runners, %d ONLINE", len(runners), online)
	})

	var runners v1alpha1.RunnerList
	if n := countObjects(t, ns, &runners, inPool); n != 3 {
		t.Fatalf("want 3 Runner objects, got %d", n)
	}
	var secrets corev1.SecretList
	if n := countObjects(t, ns, &secrets, inPool); n != 3 {
		t.Fatalf("want 3 runner Secrets, got %d", n)
	}
	var pods corev1.PodList
	if n := countObjects(t, ns, &pods, inPool); n != 3 {
		t.Fatalf("want 3 runner pods, got %d", n)
	}
	uuids := map[string]bool{}
	for _, r := range bbRunners(prefix) {
		uuids[r.UUID] = true
		for _, want := range []string{"self.hosted", "linux", "builds"} {
			if !slices.Contains(r.Labels, want) {
				t.Errorf("Bitbucket runner %s lacks label %q: %v", r.Name, want, r.Labels)
			}
		}
	}
	for _, pod := range pods.Items {
		if pod.Status.Phase != corev1.PodRunning || pod.Spec.NodeName == "" {
			t.Errorf("pod %s: phase %s on node %q, want Running on a node", pod.Name, pod.Status.Phase, pod.Spec.NodeName)
		}
		checkRunnerPod(t, &pod, uuids)
	}

	eventually(t, 30*time.Second, "pool status to show 3 ready runners", func() (bool, string) {
		p := getPool(t, ns, "builds")
		ready := condition(p, v1alpha1.ConditionReady)
		return p.Status.Ready == 3 && p.Status.Replicas == 3 && ready != nil && ready.Status == "True",
			fmt.Sprintf("status %+v ready %+v", p.Status, ready)
	})
	eventually(t, 30*time.Second, "runner status mirrors Bitbucket", func() (bool, string) {
		countObjects(t, ns, &runners, inPool)
		for _, r := range runners.Items {
			if r.Status.Phase != v1alpha1.RunnerPhaseIdle || !uuids[r.Status.UUID] {
				return false, fmt.Sprintf("runner %s phase %s uuid %s", r.Name, r.Status.Phase, r.Status.UUID)
			}
		}
		return true, ""
	})
	// The registration is told by the Runner's condition, the creation by one event for the
	// pool's batch: an event per runner would cost a write per runner (ADR 0019).
	for _, r := range runners.Items {
		if c := meta.FindStatusCondition(r.Status.Conditions, v1alpha1.ConditionRegistered); c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, r.Status.UUID) {
			t.Errorf("runner %s: Registered condition %+v, want True naming %s", r.Name, c, r.Status.UUID)
		}
	}
	named := func(e string) bool {
		return strings.HasPrefix(e, "RunnerCreated") && slices.ContainsFunc(runners.Items, func(r v1alpha1.Runner) bool { return strings.Contains(e, r.Name) })
	}
	if ev := events(t, ns, "builds"); !slices.ContainsFunc(ev, named) {
		t.Errorf("pool builds has no RunnerCreated event naming its runners: %v", ev)
	}

	deleteAndWaitGone(t, pool, 90*time.Second)
	for what, list := range map[string]client.ObjectList{"Runners": &v1alpha1.RunnerList{}, "Secrets": &corev1.SecretList{}} {
		if n := countObjects(t, ns, list, inPool); n != 0 {
			t.Errorf("%d %s left behind", n, what)
		}
	}
	eventually(t, 30*time.Second, "runner pods to be gone", func() (bool, string) {
		n := countObjects(t, ns, &corev1.PodList{}, inPool)
		return n == 0, fmt.Sprintf("%d pods left", n)
	})
	if left := bbRunners(prefix); len(left) != 0 {
		t.Errorf("%d Bitbucket runners left behind: %+v", len(left), left)
	}
}

// checkRunnerPod checks the pod a runner needs: the runner with its Bitbucket environment and
// docker-in-docker as a native sidecar sharing the working directory at the same path.
func checkRunnerPod(t *testing.T, pod *corev1.Pod, uuids map[string]bool) {
	t.Helper()
	if len(pod.Spec.Containers) != 1 || len(pod.Spec.InitContainers) != 1 {
		t.Fatalf("pod %s: want 1 container and 1 sidecar, got %d and %d", pod.Name, len(pod.Spec.Containers), len(pod.Spec.InitContainers))
	}
	runner, dind := pod.Spec.Containers[0], pod.Spec.InitContainers[0]
	if dind.RestartPolicy == nil || *dind.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("pod %s: docker container is not a native sidecar", pod.Name)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range runner.Env {
		env[e.Name] = e
	}
	for _, name := range []string{"ACCOUNT_UUID", "RUNNER_UUID", "OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "WORKING_DIRECTORY"} {
		if _, ok := env[name]; !ok {
			t.Errorf("pod %s: runner lacks env %s", pod.Name, name)
		}
	}
	if !uuids[env["RUNNER_UUID"].Value] {
		t.Errorf("pod %s: RUNNER_UUID %q is not a Bitbucket runner of the pool", pod.Name, env["RUNNER_UUID"].Value)
	}
	if env["OAUTH_CLIENT_SECRET"].Value != "" || env["OAUTH_CLIENT_SECRET"].ValueFrom == nil {
		t.Errorf("pod %s: OAUTH_CLIENT_SECRET must come from the Secret", pod.Name)
	}
	workDir := env["WORKING_DIRECTORY"].Value
	mountedAt := func(c corev1.Container) string {
		for _, m := range c.VolumeMounts {
			if m.MountPath == workDir {
				return m.Name
			}
		}
		return ""
	}
	if a, b := mountedAt(runner), mountedAt(dind); a == "" || a != b {
		t.Errorf("pod %s: working directory %s mounted as %q in runner and %q in docker", pod.Name, workDir, a, b)
	}
}

// TestAPoolWhoseSecretWentFirstStillUnregistersItsRunners is what `kubectl delete namespace`
// does: the credentials Secret and the pool go together.
func TestAPoolWhoseSecretWentFirstStillUnregistersItsRunners(t *testing.T) {
	ns := namespace(t)
	pool := createPool(t, harness.Pool(ns, "secretfirst", 2, 2))
	prefix := controllers.BitbucketNamePrefix(pool)
	eventually(t, 60*time.Second, "2 runners ONLINE", func() (bool, string) {
		online := 0
		for _, r := range bbRunners(prefix) {
			if r.Status == "ONLINE" {
				online++
			}
		}
		return online == 2, fmt.Sprintf("%d ONLINE", online)
	})
	secret := &corev1.Secret{}
	secret.Namespace, secret.Name = ns, pool.Spec.Bitbucket.CredentialsSecretRef.Name
	if err := sys.Client.Delete(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	deleteAndWaitGone(t, pool, 90*time.Second)
	if left := bbRunners(prefix); len(left) != 0 {
		t.Errorf("%d Bitbucket runners left behind", len(left))
	}
}
