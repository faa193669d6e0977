package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// poolRunners waits for n Runners of the pool, each ONLINE in Bitbucket under its UUID.
func poolRunners(t *testing.T, pool *v1alpha1.RunnerPool, n int) []v1alpha1.Runner {
	t.Helper()
	var out []v1alpha1.Runner
	eventually(t, 60*time.Second, fmt.Sprintf("%d Runners ONLINE", n), func() (bool, string) {
		var list v1alpha1.RunnerList
		countObjects(t, pool.Namespace, &list, client.MatchingLabels{v1alpha1.LabelPool: pool.Name})
		if len(list.Items) != n {
			return false, fmt.Sprintf("%d Runners", len(list.Items))
		}
		for _, rn := range list.Items {
			bb, ok := bbRunner(rn.Status.UUID)
			if !ok || bb.Status != bbsim.StatusOnline || rn.Spec.Drain {
				return false, fmt.Sprintf("Runner %s: Bitbucket %+v, drain %t", rn.Name, bb, rn.Spec.Drain)
			}
		}
		out = list.Items
		return true, ""
	})
	return out
}

// bbRunner finds a Bitbucket runner by UUID, whatever its name.
func bbRunner(uuid string) (bbsim.RunnerView, bool) {
	for _, r := range sys.BBSim.State().Runners {
		if uuid != "" && r.UUID == uuid {
			return r, true
		}
	}
	return bbsim.RunnerView{}, false
}

// observedTwiceSince waits until the pool has observed Bitbucket twice after t0, so that every
// decision (orphans, recycling) has been made on what changed at t0.
func observedTwiceSince(t *testing.T, pool *v1alpha1.RunnerPool, t0 time.Time) {
	t.Helper()
	after := t0.Add(pool.Spec.Scaling.PollInterval.Duration + time.Second)
	eventually(t, 60*time.Second, "two observations after the change", func() (bool, string) {
		p := getPool(t, pool.Namespace, pool.Name)
		seen := p.Status.LastObservedTime
		return seen != nil && seen.After(after), fmt.Sprintf("last observed %v", seen)
	})
}

// Renaming runners in Bitbucket changes nothing: the Runners keep them by UUID, none is taken
// for an orphan (not even one whose new name still carries the pool's marker), and deleting the
// pool unregisters them by UUID.
func TestARunnerRenamedInBitbucketKeepsItsRunner(t *testing.T) {
	ns := namespace(t)
	pool := createPool(t, harness.Pool(ns, "renamed", 2, 3))
	before := poolRunners(t, pool, 2)
	newNames := []string{
		controllers.BitbucketNamePrefix(pool) + "renamed-by-hand", // marker kept, name unknown to any Runner
		"my-favourite-runner", // marker gone
	}
	for i, rn := range before {
		if _, err := sys.BBSim.UpdateRunner(rn.Status.UUID, bbsim.UpdateRunnerRequest{Name: &newNames[i]}); err != nil {
			t.Fatal(err)
		}
	}
	observedTwiceSince(t, pool, time.Now())

	after := poolRunners(t, pool, 2)
	for i, rn := range before {
		bb, ok := bbRunner(rn.Status.UUID)
		if !ok || bb.Name != newNames[i] {
			t.Errorf("renamed runner %s: in Bitbucket %t, name %q", rn.Status.UUID, ok, bb.Name)
		}
		if !slices.ContainsFunc(after, func(a v1alpha1.Runner) bool { return a.Name == rn.Name && a.Status.UUID == rn.Status.UUID }) {
			t.Errorf("Runner %s (%s) was replaced or lost after the rename", rn.Name, rn.Status.UUID)
		}
	}
	for _, e := range events(t, ns, pool.Name) {
		if strings.HasPrefix(e, "OrphanRemoved") {
			t.Errorf("a renamed runner was taken for an orphan: %s", e)
		}
	}

	deleteAndWaitGone(t, pool, 60*time.Second)
	for _, rn := range before {
		if bb, ok := bbRunner(rn.Status.UUID); ok {
			t.Errorf("renamed runner %s (%s) outlived its pool", bb.UUID, bb.Name)
		}
	}
}

// A relabelled runner no longer takes the pool's steps: an idle one is replaced at once, a busy
// one finishes its step first.
func TestARunnerRelabelledInBitbucketIsReplacedOnceIdle(t *testing.T) {
	ns := namespace(t)
	const label = "relabelled"
	pool := createPool(t, harness.Pool(ns, label, 2, 3))
	before := poolRunners(t, pool, 2)
	steps, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 1, RunsOn: []string{label}, Duration: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var busy, idle v1alpha1.Runner
	eventually(t, 30*time.Second, "a runner to take the step", func() (bool, string) {
		for i, rn := range before {
			if bb, ok := bbRunner(rn.Status.UUID); ok && bb.Step == steps[0] {
				busy, idle = before[i], before[1-i]
				return true, ""
			}
		}
		return false, "the step waits"
	})
	elsewhere := []string{"self.hosted", "linux", "elsewhere"}
	for _, rn := range before {
		if _, err := sys.BBSim.UpdateRunner(rn.Status.UUID, bbsim.UpdateRunnerRequest{Labels: elsewhere}); err != nil {
			t.Fatal(err)
		}
	}

	eventually(t, 60*time.Second, "the idle relabelled runner to be replaced", func() (bool, string) {
		_, ok := bbRunner(idle.Status.UUID)
		return !ok, "still registered"
	})
	if bb, ok := bbRunner(busy.Status.UUID); !ok || bb.Step != steps[0] {
		t.Fatalf("the busy relabelled runner went before its step ended: in Bitbucket %t, step %q", ok, bb.Step)
	}

	eventually(t, 90*time.Second, "the busy relabelled runner to be replaced after its step", func() (bool, string) {
		_, ok := bbRunner(busy.Status.UUID)
		return !ok, "still registered"
	})
	if st := stepsOf(label); len(st) != 1 || st[0].Result != "SUCCESSFUL" {
		t.Fatalf("the step of the relabelled runner: %+v", st)
	}
	for _, rn := range poolRunners(t, pool, 2) {
		bb, _ := bbRunner(rn.Status.UUID)
		if slices.Contains(bb.Labels, "elsewhere") || !slices.Contains(bb.Labels, label) {
			t.Errorf("replacement %s has labels %v", rn.Name, bb.Labels)
		}
	}
	if ev := events(t, ns, pool.Name); !slices.ContainsFunc(ev, func(e string) bool { return strings.HasPrefix(e, controllers.ReasonLabelsChanged+":") }) {
		t.Errorf("no %s event on the pool: %v", controllers.ReasonLabelsChanged, ev)
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
}

// A runner renamed in the moment between its registration and the status that records its UUID
// is still adopted: the Runner's Secret names its UUID.
func TestARunnerRenamedBeforeItsUUIDWasSavedIsAdopted(t *testing.T) {
	ns := namespace(t)
	pool := createPool(t, harness.Pool(ns, "renamedcrash", 1, 1))
	runner := onlyRunner(t, ns, pool)
	uuid := runner.Status.UUID

	newName := controllers.BitbucketNamePrefix(pool) + "renamed-during-crash"
	crashBeforeStatus(t, runner, func() {
		if _, err := sys.BBSim.UpdateRunner(uuid, bbsim.UpdateRunnerRequest{Name: &newName}); err != nil {
			t.Fatal(err)
		}
	})

	runner = onlyRunner(t, ns, pool)
	if runner.Status.UUID != uuid {
		t.Fatalf("the restarted operator registered %s instead of adopting the renamed %s", runner.Status.UUID, uuid)
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
}

// Editing a pool's labels replaces its runners, one idle runner at a time: Bitbucket cannot
// change a registered runner's labels, so new runners are registered with the new ones.
func TestEditingThePoolLabelsReplacesItsRunners(t *testing.T) {
	ns := namespace(t)
	pool := createPool(t, harness.Pool(ns, "edited", 2, 3))
	before := poolRunners(t, pool, 2)

	patch := client.MergeFrom(pool.DeepCopy())
	pool.Spec.Labels = []v1alpha1.RunnerLabel{"edited", "gpu"}
	if err := sys.Client.Patch(t.Context(), pool, patch); err != nil {
		t.Fatal(err)
	}
	want := []string{"edited", "gpu", "linux", "self.hosted"}
	eventually(t, 120*time.Second, "every runner registered with the new labels", func() (bool, string) {
		after := poolRunners(t, pool, 2)
		for _, rn := range after {
			bb, _ := bbRunner(rn.Status.UUID)
			if got := slices.Sorted(slices.Values(bb.Labels)); !slices.Equal(got, want) {
				return false, fmt.Sprintf("runner %s has labels %v", rn.Name, got)
			}
		}
		return true, ""
	})
	for _, rn := range before {
		if _, ok := bbRunner(rn.Status.UUID); ok {
			t.Errorf("runner %s with the old labels is still registered", rn.Name)
		}
	}
}
