package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// bbsim's name of the pipelines list, as counted in State().Calls: only queue reads call it.
const callPipelines = "GET /2.0/repositories/{ws}/{repo}/pipelines"

// queuePool is a Queue pool at zero that reads the queue of one repository.
func queuePool(ns, name, repository string) *v1alpha1.RunnerPool {
	pool := harness.Pool(ns, name, 0, 2)
	pool.Spec.Scaling.Policy = v1alpha1.ScalingPolicyQueue
	pool.Spec.Scaling.IdleRunners = 0
	pool.Spec.Scaling.Repositories = []string{repository}
	return pool
}

func wokenAt(t *testing.T, pool *v1alpha1.RunnerPool) string {
	t.Helper()
	return getPool(t, pool.Namespace, pool.Name).Annotations[v1alpha1.AnnotationPollRequested]
}

func waitStepsDone(t *testing.T, label string, want int) {
	t.Helper()
	eventually(t, 90*time.Second, fmt.Sprintf("the %d %s steps to finish", want, label), func() (bool, string) {
		done := 0
		for _, s := range stepsOf(label) {
			if s.Status == "completed" {
				done++
			}
		}
		return done == want, fmt.Sprintf("%d of %d done", done, want)
	})
}

func TestAWebhookForOneRepositoryDoesNotWakeThePoolsOfAnother(t *testing.T) {
	ns := namespace(t)
	poolA := createPool(t, queuePool(ns, "wakea", bbsim.DefaultRepositoryUUID))
	poolB := createPool(t, queuePool(ns, "wakeb", secondRepositorySlug))
	repoPoolB := harness.Pool(ns, "wakebrepo", 0, 1)
	repoPoolB.Spec.Bitbucket.Repository = secondRepositoryUUID
	repoPoolB.Spec.Scaling.IdleRunners = 0
	repoPoolB = createPool(t, repoPoolB)

	// A pipeline in the first repository: its commit statuses wake the pool reading it, which
	// starts a runner for the step, and no pool of the second repository.
	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 1, RunsOn: []string{"self.hosted", "linux", "wakea"}, Duration: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the webhook to wake the pool of the first repository", func() (bool, string) {
		return wokenAt(t, poolA) != "", "not woken"
	})
	waitStepsDone(t, "wakea", 1)
	time.Sleep(3 * time.Second) // the last commit status's round, if it was deferred
	for _, p := range []*v1alpha1.RunnerPool{poolB, repoPoolB} {
		if at := wokenAt(t, p); at != "" {
			t.Errorf("pool %s, of the second repository, was woken at %s by webhooks of the first", p.Name, at)
		}
	}

	// And the other way round: the second repository's pools are woken for it.
	aBefore := wokenAt(t, poolA)
	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 1, Repository: secondRepositoryUUID, RunsOn: []string{"self.hosted", "linux", "wakeb"}, Duration: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the webhook to wake the pools of the second repository", func() (bool, string) {
		b, repoB := wokenAt(t, poolB), wokenAt(t, repoPoolB)
		return b != "" && repoB != "", fmt.Sprintf("woken at %q and %q", b, repoB)
	})
	waitStepsDone(t, "wakeb", 1)
	time.Sleep(3 * time.Second)
	if at := wokenAt(t, poolA); at != aBefore {
		t.Errorf("pool %s, of the first repository, was woken again at %s by webhooks of the second", poolA.Name, at)
	}
	for _, p := range []*v1alpha1.RunnerPool{poolA, poolB, repoPoolB} {
		deleteAndWaitGone(t, p, 60*time.Second)
	}
}

// Two Queue pools reading one repository (spelt two ways) are woken in the same rounds and
// share one read of the queue per round.
func TestQueuePoolsOnOneRepositoryReadItOncePerRound(t *testing.T) {
	ns := namespace(t)
	// A credential of its own: bbsim counts its reads apart from those of other tests' pools
	// (pools still being deleted would be woken by this test's webhooks and read the queue too).
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "queue-share", Namespace: ns},
		StringData: map[string]string{v1alpha1.SecretKeyAccessToken: queueShareToken}}
	if err := sys.Client.Create(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	reads := func() int { return sys.BBSim.State().CallsByCredential[queueShareCredential][callPipelines] }
	var pools []*v1alpha1.RunnerPool
	for name, repo := range map[string]string{
		"shareone": bbsim.DefaultRepositoryUUID,
		"sharetwo": strings.ToUpper(strings.Trim(bbsim.DefaultRepositoryUUID, "{}")),
	} {
		p := queuePool(ns, name, repo)
		p.Spec.Bitbucket.CredentialsSecretRef.Name = secret.Name
		// No periodic poll within the test: every read is one a webhook asked for.
		p.Spec.Scaling.PollInterval = metav1.Duration{Duration: 10 * time.Minute}
		pools = append(pools, createPool(t, p))
	}
	eventually(t, 30*time.Second, "both pools to read the queue once", func() (bool, string) {
		for _, p := range pools {
			if c := condition(getPool(t, ns, p.Name), v1alpha1.ConditionQueueRead); c == nil || c.Status != "True" {
				return false, p.Name + " has not read the queue"
			}
		}
		return true, ""
	})
	before := reads()

	for _, label := range []string{"shareone", "sharetwo", "shareone"} {
		if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 1, RunsOn: []string{"self.hosted", "linux", label}, Duration: 2 * time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	// Rounds are at least two seconds apart: sampling four times a second sees every one.
	rounds := map[string]bool{}
	eventually(t, 90*time.Second, "the steps of both pools to finish", func() (bool, string) {
		for range 4 {
			stamps := map[string]bool{}
			for _, p := range pools {
				stamps[wokenAt(t, p)] = true
			}
			if len(stamps) == 1 {
				for s := range stamps {
					rounds[s] = true
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		done := 0
		for _, label := range []string{"shareone", "sharetwo"} {
			for _, s := range stepsOf(label) {
				if s.Status == "completed" {
					done++
				}
			}
		}
		return done == 3, fmt.Sprintf("%d of 3 steps done", done)
	})
	time.Sleep(3 * time.Second) // the round of the last commit status
	for _, p := range pools {
		rounds[wokenAt(t, p)] = true
	}
	delete(rounds, "")
	read := reads() - before
	t.Logf("%d wake rounds, %d reads of the queue by two pools (one by one they would be %d)", len(rounds), read, 2*len(rounds))
	if len(rounds) == 0 {
		t.Fatal("the webhooks woke no pool")
	}
	if read > len(rounds) {
		t.Errorf("%d reads of the queue for %d wake rounds: the two pools did not share them", read, len(rounds))
	}
	for _, p := range pools {
		deleteAndWaitGone(t, p, 60*time.Second)
	}
}
