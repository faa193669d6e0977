package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// stepsOf returns the simulator's steps that asked for the label.
func stepsOf(label string) []bbsim.StepView {
	var out []bbsim.StepView
	for _, s := range sys.BBSim.State().Steps {
		for _, l := range s.RunsOn {
			if l == label {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

func TestAnIdleBufferPoolScalesUpForStepsAndBackDownWithoutKillingOne(t *testing.T) {
	ns := namespace(t)
	const label = "burst"
	pool := harness.Pool(ns, label, 1, 6)
	pool = createPool(t, pool)
	prefix := controllers.BitbucketNamePrefix(pool)
	onlyRunner(t, ns, pool) // idle buffer 1 with nothing busy: one runner

	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 4, RunsOn: []string{"self.hosted", "linux", label}, Duration: 12 * time.Second}); err != nil {
		t.Fatal(err)
	}
	peak := 0
	eventually(t, 90*time.Second, "all 4 steps to finish", func() (bool, string) {
		bb := bbRunners(prefix)
		peak = max(peak, len(bb))
		if len(bb) > int(pool.Spec.MaxRunners) {
			t.Fatalf("%d Bitbucket runners, above max %d", len(bb), pool.Spec.MaxRunners)
		}
		done := 0
		for _, s := range stepsOf(label) {
			if s.Status == "completed" {
				done++
			}
		}
		return done == 4, fmt.Sprintf("%d of 4 steps done, %d runners", done, len(bb))
	})
	if peak < 3 {
		t.Errorf("the pool peaked at %d runners for 4 steps; it did not scale up", peak)
	}
	for _, s := range stepsOf(label) {
		if s.Result != "SUCCESSFUL" {
			t.Errorf("step %s ended %s (%s)", s.UUID, s.Result, s.Reason)
		}
	}

	eventually(t, 90*time.Second, "the pool to come back to its idle buffer", func() (bool, string) {
		var list v1alpha1.RunnerList
		n := countObjects(t, ns, &list, client.MatchingLabels{v1alpha1.LabelPool: pool.Name})
		bb := len(bbRunners(prefix))
		return n == 1 && bb == 1, fmt.Sprintf("%d Runners, %d Bitbucket runners", n, bb)
	})
	deleteAndWaitGone(t, pool, 60*time.Second)
}

func TestAQueuePoolAtZeroStartsRunnersForWaitingStepsAndGoesBackToZero(t *testing.T) {
	ns := namespace(t)
	const label = "fromzero"
	pool := harness.Pool(ns, label, 0, 5)
	pool.Spec.Scaling.Policy = v1alpha1.ScalingPolicyQueue
	pool.Spec.Scaling.IdleRunners = 0
	pool.Spec.Scaling.Repositories = []string{bbsim.DefaultRepositoryUUID}
	pool = createPool(t, pool)
	prefix := controllers.BitbucketNamePrefix(pool)
	time.Sleep(6 * time.Second) // a poll with nothing waiting
	if n := len(bbRunners(prefix)); n != 0 {
		t.Fatalf("an idle Queue pool at zero has %d runners", n)
	}

	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 3, RunsOn: []string{"self.hosted", "linux", label}, Duration: 8 * time.Second}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "all 3 steps to finish", func() (bool, string) {
		done := 0
		for _, s := range stepsOf(label) {
			if s.Status == "completed" {
				done++
			}
		}
		return done == 3, fmt.Sprintf("%d of 3 done, %d runners", done, len(bbRunners(prefix)))
	})
	for _, s := range stepsOf(label) {
		if s.Result != "SUCCESSFUL" {
			t.Errorf("step %s ended %s (%s)", s.UUID, s.Result, s.Reason)
		}
	}
	eventually(t, 90*time.Second, "the pool to go back to zero", func() (bool, string) {
		var list v1alpha1.RunnerList
		n := countObjects(t, ns, &list, client.MatchingLabels{v1alpha1.LabelPool: pool.Name})
		return n == 0 && len(bbRunners(prefix)) == 0, fmt.Sprintf("%d Runners", n)
	})
	deleteAndWaitGone(t, pool, 60*time.Second)
}

func TestPoolsWithOverlappingLabelsDoNotBothScaleForTheSameStep(t *testing.T) {
	ns := namespace(t)
	general := harness.Pool(ns, "overlap", 0, 4)
	specific := harness.Pool(ns, "overlap-gpu", 0, 4)
	specific.Spec.Labels = []v1alpha1.RunnerLabel{"overlap", "gpu"}
	for _, p := range []*v1alpha1.RunnerPool{general, specific} {
		p.Spec.Scaling.Policy = v1alpha1.ScalingPolicyQueue
		p.Spec.Scaling.IdleRunners = 0
		p.Spec.Scaling.Repositories = []string{bbsim.DefaultRepositoryUUID}
		if err := sys.Client.Create(t.Context(), p); err != nil {
			t.Fatal(err)
		}
	}
	general, specific = getPool(t, ns, general.Name), getPool(t, ns, specific.Name)
	// Both pools can run these steps; the more specific pool takes them.
	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 2, RunsOn: []string{"overlap", "gpu"}, Duration: 6 * time.Second}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the gpu steps to finish", func() (bool, string) {
		done := 0
		for _, s := range stepsOf("gpu") {
			if s.Status == "completed" {
				done++
			}
		}
		return done == 2, fmt.Sprintf("%d of 2 done", done)
	})
	if n := len(bbRunners(controllers.BitbucketNamePrefix(general))); n != 0 {
		t.Errorf("the general pool scaled to %d runners for steps the specific pool took", n)
	}
	for _, p := range []*v1alpha1.RunnerPool{general, specific} {
		deleteAndWaitGone(t, p, 60*time.Second)
	}
}

func TestAnEphemeralRunnerIsReplacedAfterItsStep(t *testing.T) {
	ns := namespace(t)
	const label = "ephemeral"
	pool := harness.Pool(ns, label, 1, 2)
	pool.Spec.Scaling.IdleRunners = 0
	pool.Spec.Runner.Ephemeral = true
	pool = createPool(t, pool)
	first := onlyRunner(t, ns, pool)
	// A step longer than a poll, so the runner is seen running it.
	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 1, RunsOn: []string{label}, Duration: 8 * time.Second}); err != nil {
		t.Fatal(err)
	}
	// Disabled at the first sight of its step, while the step still runs, so Bitbucket cannot
	// hand it a second one.
	eventually(t, 30*time.Second, "the runner disabled while its step runs", func() (bool, string) {
		bb, _ := bbRunner(first.Status.UUID)
		steps := stepsOf(label)
		if len(steps) == 1 && steps[0].Status == "completed" {
			t.Fatalf("the step ended before the runner was disabled: %+v", bb)
		}
		return bb.Disabled && bb.Step != "", fmt.Sprintf("%+v", bb)
	})
	eventually(t, 90*time.Second, "a fresh runner after the step", func() (bool, string) {
		steps := stepsOf(label)
		if len(steps) != 1 || steps[0].Status != "completed" {
			return false, "step not done"
		}
		var list v1alpha1.RunnerList
		countObjects(t, ns, &list, client.MatchingLabels{v1alpha1.LabelPool: pool.Name})
		if len(list.Items) != 1 || list.Items[0].Name == first.Name || list.Items[0].Status.Phase != v1alpha1.RunnerPhaseIdle {
			return false, fmt.Sprintf("%d Runners", len(list.Items))
		}
		return true, ""
	})
	if s := stepsOf(label)[0]; s.Result != "SUCCESSFUL" || s.Runner != first.Status.UUID {
		t.Errorf("step ran on %s with %s; want the first runner %s, SUCCESSFUL", s.Runner, s.Result, first.Status.UUID)
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
}

// stateAndDeleteCalls counts the runner state changes and deletes Bitbucket has received.
func stateAndDeleteCalls() (states, deletes int) {
	for endpoint, n := range sys.BBSim.State().Calls {
		switch {
		case strings.HasPrefix(endpoint, "PUT ") && strings.HasSuffix(endpoint, "/state"):
			states += n
		case strings.HasPrefix(endpoint, "DELETE ") && strings.Contains(endpoint, "/pipelines-config/runners/"):
			deletes += n
		}
	}
	return states, deletes
}

func TestScalingDownDisablesAndDeletesEachRunnerOnceAndIdleRunnersAreNotRewritten(t *testing.T) {
	ns := namespace(t)
	const label = "scaledown"
	pool := createPool(t, harness.Pool(ns, label, 3, 3))
	prefix := controllers.BitbucketNamePrefix(pool)
	runners := func() []v1alpha1.Runner {
		var list v1alpha1.RunnerList
		countObjects(t, ns, &list, client.MatchingLabels{v1alpha1.LabelPool: pool.Name})
		return list.Items
	}
	eventually(t, 60*time.Second, "3 runners ONLINE and idle in their status", func() (bool, string) {
		idle := 0
		for _, r := range runners() {
			if r.Status.Phase == v1alpha1.RunnerPhaseIdle {
				idle++
			}
		}
		return idle == 3, fmt.Sprintf("%d idle Runners", idle)
	})

	// Nothing changes for idle runners, so nothing is written: two polls leave them as they are.
	versions := map[string]string{}
	for _, r := range runners() {
		versions[r.Name] = r.ResourceVersion
	}
	time.Sleep(2*pool.Spec.Scaling.PollInterval.Duration + time.Second)
	for _, r := range runners() {
		if versions[r.Name] != r.ResourceVersion {
			t.Errorf("idle Runner %s was written while nothing changed (resourceVersion %s -> %s): %+v", r.Name, versions[r.Name], r.ResourceVersion, r.Status)
		}
	}

	statesBefore, deletesBefore := stateAndDeleteCalls()
	current := getPool(t, ns, pool.Name)
	patch := client.MergeFrom(current.DeepCopy())
	current.Spec.MinRunners = 1
	if err := sys.Client.Patch(t.Context(), current, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the pool to scale down to 1", func() (bool, string) {
		n, bb := len(runners()), len(bbRunners(prefix))
		return n == 1 && bb == 1, fmt.Sprintf("%d Runners, %d Bitbucket runners", n, bb)
	})
	states, deletes := stateAndDeleteCalls()
	if states-statesBefore != 2 || deletes-deletesBefore != 2 {
		t.Errorf("removing 2 idle runners sent %d state changes and %d deletes; want one DISABLED and one DELETE each",
			states-statesBefore, deletes-deletesBefore)
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
}
