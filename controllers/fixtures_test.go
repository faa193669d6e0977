package controllers

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/observe"
	"github.com/runnerpool/runnerpool-operator/internal/scaling"
)

// now is the fixed present of every test in this package, so durations read as "ago".
var now = time.Date(2025, 6, 2, 12, 0, 0, 0, time.UTC)

const (
	testPendingTimeout = 5 * time.Minute
	testOfflineGrace   = 2 * time.Minute
)

func ago(d time.Duration) time.Time { return now.Add(-d) }

func metaTime(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t)
	return &mt
}

// testPool is a pool with the API defaults that matter to the pure functions set explicitly,
// since no API server defaults it here.
func testPool(mods ...func(*v1alpha1.RunnerPool)) *v1alpha1.RunnerPool {
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: "build", Namespace: "ci", UID: types.UID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")},
		Spec: v1alpha1.RunnerPoolSpec{
			Bitbucket: v1alpha1.BitbucketSpec{
				Workspace:            "{0b3f8a1e-2c4d-4e5f-8a9b-0c1d2e3f4a5b}",
				CredentialsSecretRef: v1alpha1.SecretReference{Name: "bitbucket"},
			},
			MinRunners: 1,
			MaxRunners: 10,
			Scaling: v1alpha1.ScalingSpec{
				Policy:         v1alpha1.ScalingPolicyIdleBuffer,
				IdleRunners:    1,
				PollInterval:   metav1.Duration{Duration: 15 * time.Second},
				ScaleDownDelay: metav1.Duration{Duration: 5 * time.Minute},
				PendingTimeout: metav1.Duration{Duration: testPendingTimeout},
			},
			Runner: v1alpha1.RunnerContainerSpec{MaxAge: metav1.Duration{Duration: 24 * time.Hour}},
		},
	}
	for _, mod := range mods {
		mod(pool)
	}
	return pool
}

// runnerMod changes one aspect of a test Runner; a table lists them to describe a situation.
type runnerMod func(*v1alpha1.Runner)

func testRunner(mods ...runnerMod) v1alpha1.Runner {
	runner := v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{Name: "build-abcde", Namespace: "ci", CreationTimestamp: metav1.NewTime(ago(time.Hour))},
		Spec:       v1alpha1.RunnerSpec{BitbucketName: "rp-0f1e2d3c-build-abcde"},
	}
	for _, mod := range mods {
		mod(&runner)
	}
	return runner
}

func named(name string) runnerMod { return func(r *v1alpha1.Runner) { r.Name = name } }

func createdAgo(d time.Duration) runnerMod {
	return func(r *v1alpha1.Runner) { r.CreationTimestamp = metav1.NewTime(ago(d)) }
}

func registered(uuid string) runnerMod { return func(r *v1alpha1.Runner) { r.Status.UUID = uuid } }

func podStartedAgo(d time.Duration) runnerMod {
	return func(r *v1alpha1.Runner) { r.Status.PodStartTime = metaTime(ago(d)) }
}

func onlineSince(d time.Duration) runnerMod {
	return func(r *v1alpha1.Runner) { r.Status.OnlineTime = metaTime(ago(d)) }
}

func lastStepAgo(d time.Duration) runnerMod {
	return func(r *v1alpha1.Runner) { r.Status.LastStepTime = metaTime(ago(d)) }
}

// mirrored is what the Runner's status last copied from Bitbucket.
func mirrored(status bitbucket.RunnerStatus, step string) runnerMod {
	return func(r *v1alpha1.Runner) {
		r.Status.BitbucketState = string(status)
		r.Status.Step = step
	}
}

func inPhase(p v1alpha1.RunnerPhase) runnerMod {
	return func(r *v1alpha1.Runner) { r.Status.Phase = p }
}

func withCondition(condType string, status metav1.ConditionStatus, reason string, since time.Duration) runnerMod {
	return func(r *v1alpha1.Runner) {
		r.Status.Conditions = append(r.Status.Conditions, metav1.Condition{
			Type: condType, Status: status, Reason: reason, LastTransitionTime: metav1.NewTime(ago(since)),
		})
	}
}

func podRunning(since time.Duration) runnerMod {
	return withCondition(v1alpha1.ConditionPodReady, metav1.ConditionTrue, ReasonPodRunning, since)
}

func podNotReady() runnerMod {
	return withCondition(v1alpha1.ConditionPodReady, metav1.ConditionFalse, ReasonPodNotReady, time.Minute)
}

func draining() runnerMod { return func(r *v1alpha1.Runner) { r.Spec.Drain = true } }

func disabledAgo(d time.Duration) runnerMod {
	return func(r *v1alpha1.Runner) { r.Status.DisabledTime = metaTime(ago(d)) }
}

func deleting() runnerMod {
	return func(r *v1alpha1.Runner) { r.DeletionTimestamp = metaTime(ago(time.Second)) }
}

func drainCancelledAgo(d time.Duration) runnerMod {
	return func(r *v1alpha1.Runner) {
		r.Annotations = map[string]string{v1alpha1.AnnotationDrainCancelled: ago(d).Format(time.RFC3339Nano)}
	}
}

func stepsStarted(n int32) runnerMod { return func(r *v1alpha1.Runner) { r.Status.StepsStarted = n } }

func templateHash(h string) runnerMod {
	return func(r *v1alpha1.Runner) { r.Status.PodTemplateHash = h }
}

// bbRunner is a runner as Bitbucket lists it; step "" means idle, and the state changed
// stateAge ago.
func bbRunner(uuid string, status bitbucket.RunnerStatus, step string, stateAge time.Duration) bitbucket.Runner {
	r := bitbucket.Runner{
		UUID:      uuid,
		Name:      "rp-0f1e2d3c-" + uuid,
		CreatedOn: ago(2 * time.Hour),
		State:     bitbucket.RunnerState{Status: status, UpdatedOn: ago(stateAge)},
	}
	if step != "" {
		r.State.Step = &bitbucket.StepRef{UUID: step}
	}
	return r
}

// listedRunners is a Lister that always returns the same runners.
type listedRunners []bitbucket.Runner

func (l listedRunners) ListRunners(context.Context, bitbucket.Scope) ([]bitbucket.Runner, error) {
	return l, nil
}

// snapshotOf is an observation made now that lists exactly these runners.
func snapshotOf(t *testing.T, runners ...bitbucket.Runner) *observe.Snapshot {
	t.Helper()
	return snapshotAt(t, now, runners...)
}

// snapshotAt is an observation started at that lists exactly these runners.
func snapshotAt(t *testing.T, at time.Time, runners ...bitbucket.Runner) *observe.Snapshot {
	t.Helper()
	store := observe.NewStore(func() time.Time { return at })
	snap, err := store.Get(context.Background(), observe.Key{APIURL: "http://127.0.0.1"}, listedRunners(runners), at)
	if err != nil {
		t.Fatalf("observe: %v", err)
	}
	return snap
}

var stateNames = map[scaling.State]string{
	scaling.Starting: "Starting", scaling.Idle: "Idle", scaling.Busy: "Busy", scaling.Draining: "Draining", scaling.Stuck: "Stuck",
}

func stateName(s scaling.State) string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return "unknown state"
}
