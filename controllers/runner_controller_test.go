package controllers

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/fixture"
	"github.com/runnerpool/runnerpool-operator/internal/runnerlist"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
)

func TestRunnerPhase(t *testing.T) {
	const uuid = "{33333333-3333-3333-3333-333333333333}"
	registrationRefused := func(reason string) fixture.RunnerMod {
		return fixture.WithCondition(v1alpha1.ConditionRegistered, metav1.ConditionFalse, reason, time.Minute)
	}
	podFailingCond := fixture.WithCondition(v1alpha1.ConditionPodReady, metav1.ConditionFalse, runnerpod.ReasonPodFailing, time.Minute)
	tests := []struct {
		name   string
		runner []fixture.RunnerMod
		want   v1alpha1.RunnerPhase
	}{
		{"a Runner being deleted is deleting, whatever else holds", []fixture.RunnerMod{fixture.Registered(uuid), fixture.Deleting(), fixture.Mirrored(bitbucket.RunnerStatusOnline, "{step-1}")}, v1alpha1.RunnerPhaseDeleting},
		{"a new Runner is registering", nil, v1alpha1.RunnerPhaseRegistering},
		{"a Runner whose registration failed transiently is still registering", []fixture.RunnerMod{registrationRefused(ReasonRegistrationFailed)}, v1alpha1.RunnerPhaseRegistering},
		{"a Runner refused for the runner limit has failed", []fixture.RunnerMod{registrationRefused(ReasonRunnerLimitReached)}, v1alpha1.RunnerPhaseFailed},
		{"a Runner without usable credentials has failed", []fixture.RunnerMod{registrationRefused(ReasonCredentials)}, v1alpha1.RunnerPhaseFailed},
		{"a registered runner whose pod cannot start has failed", []fixture.RunnerMod{fixture.Registered(uuid), podFailingCond}, v1alpha1.RunnerPhaseFailed},
		{"a registered runner whose pods keep ending has failed", []fixture.RunnerMod{fixture.Registered(uuid),
			fixture.WithCondition(v1alpha1.ConditionPodReady, metav1.ConditionFalse, ReasonPodRestartBackoff, time.Minute)}, v1alpha1.RunnerPhaseFailed},
		{"a registered runner whose pod just ended is starting again", []fixture.RunnerMod{fixture.Registered(uuid),
			fixture.WithCondition(v1alpha1.ConditionPodReady, metav1.ConditionFalse, ReasonPodEnded, time.Minute)}, v1alpha1.RunnerPhaseStarting},
		{"a registered runner whose pod is not up yet is starting", []fixture.RunnerMod{fixture.Registered(uuid), fixture.PodNotReady(), fixture.Mirrored(bitbucket.RunnerStatusUnregistered, "")}, v1alpha1.RunnerPhaseStarting},
		{"a runner the pool drains is draining", []fixture.RunnerMod{fixture.Registered(uuid), fixture.Draining(), fixture.Mirrored(bitbucket.RunnerStatusOnline, "")}, v1alpha1.RunnerPhaseDraining},
		{"a draining runner on its last step is draining, not busy", []fixture.RunnerMod{fixture.Registered(uuid), fixture.Draining(), fixture.Mirrored(bitbucket.RunnerStatusDisabled, "{step-1}")}, v1alpha1.RunnerPhaseDraining},
		{"a runner still DISABLED after its drain was cancelled is draining until enabled", []fixture.RunnerMod{fixture.Registered(uuid), fixture.DisabledAgo(time.Minute), fixture.Mirrored(bitbucket.RunnerStatusDisabled, "")}, v1alpha1.RunnerPhaseDraining},
		{"a runner on a step is busy", []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOnline, "{step-1}"), fixture.OnlineSince(time.Hour)}, v1alpha1.RunnerPhaseBusy},
		{"an ONLINE runner without a step is idle", []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOnline, ""), fixture.OnlineSince(time.Hour)}, v1alpha1.RunnerPhaseIdle},
		{"a runner that was ONLINE and lost its agent is offline", []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOffline, ""), fixture.OnlineSince(time.Hour)}, v1alpha1.RunnerPhaseOffline},
		{"an OFFLINE runner that never connected is starting", []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOffline, "")}, v1alpha1.RunnerPhaseStarting},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runner := fixture.Runner(tt.runner...)
			if got := runnerPhase(&runner); got != tt.want {
				t.Errorf("runnerPhase = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestAwaitingConnection(t *testing.T) {
	const uuid = "{44444444-4444-4444-4444-444444444444}"
	tests := []struct {
		name   string
		runner []fixture.RunnerMod
		want   bool
	}{
		{"a runner whose pod just became ready and is not ONLINE yet is awaited", []fixture.RunnerMod{fixture.Registered(uuid), fixture.PodRunning(10 * time.Second), fixture.Mirrored(bitbucket.RunnerStatusUnregistered, "")}, true},
		{"a runner that is ONLINE is not awaited", []fixture.RunnerMod{fixture.Registered(uuid), fixture.PodRunning(10 * time.Second), fixture.Mirrored(bitbucket.RunnerStatusOnline, "")}, false},
		{"a runner on a step is not awaited", []fixture.RunnerMod{fixture.Registered(uuid), fixture.PodRunning(10 * time.Second), fixture.Mirrored(bitbucket.RunnerStatusOffline, "{step-1}")}, false},
		{"a runner not registered yet is not awaited", []fixture.RunnerMod{fixture.PodRunning(10 * time.Second)}, false},
		{"a draining runner is not awaited", []fixture.RunnerMod{fixture.Registered(uuid), fixture.Draining(), fixture.PodRunning(10 * time.Second)}, false},
		{"a runner whose pod is not ready is not awaited", []fixture.RunnerMod{fixture.Registered(uuid), fixture.PodNotReady()}, false},
		{"a runner without a pod condition is not awaited", []fixture.RunnerMod{fixture.Registered(uuid)}, false},
		{"a runner that has not connected a minute after its pod became ready is no longer awaited", []fixture.RunnerMod{fixture.Registered(uuid), fixture.PodRunning(connectWindow), fixture.Mirrored(bitbucket.RunnerStatusUnregistered, "")}, false},
	}
	r := &RunnerReconciler{Clock: clocktesting.NewFakePassiveClock(fixture.Now)}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runner := fixture.Runner(tt.runner...)
			if got := r.awaitingConnection(&runner, readySinceOf(&runner)); got != tt.want {
				t.Errorf("awaitingConnection = %t, want %t", got, tt.want)
			}
		})
	}
}

func TestDisabledTimeIsNeverEarlierThanTheDisableOnceSaved(t *testing.T) {
	for _, at := range []time.Time{fixture.Now, fixture.Now.Add(time.Millisecond), fixture.Now.Add(999 * time.Millisecond)} {
		saved := disabledTime(at)
		raw, err := json.Marshal(saved)
		if err != nil {
			t.Fatal(err)
		}
		var read metav1.Time
		if err := json.Unmarshal(raw, &read); err != nil {
			t.Fatal(err)
		}
		if read.Time.Before(at) || !read.Equal(&saved) {
			t.Errorf("disabled at %s: saved %s, read back %s; want the same time, not before the disable", at.Format(time.RFC3339Nano), saved.Format(time.RFC3339Nano), read.Format(time.RFC3339Nano))
		}
	}
}

func TestConfirmsIdle(t *testing.T) {
	const uuid = "{11111111-1111-1111-1111-111111111111}"
	disabled := fixture.Now.Add(-time.Second)
	tests := []struct {
		name string
		snap *runnerlist.Snapshot
		want bool
	}{
		{"no observation", nil, false},
		{"an observation from before the disable, idle", fixture.SnapshotAt(t, disabled.Add(-time.Millisecond), fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Minute)), false},
		{"an observation from after the disable, idle", fixture.SnapshotAt(t, disabled, fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusDisabled, "", time.Minute)), true},
		{"an observation from after the disable, busy", fixture.SnapshotAt(t, disabled, fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusDisabled, "{step-1}", time.Minute)), false},
		{"an observation from after the disable without the runner", fixture.SnapshotAt(t, disabled), true},
		{"an observation from after the disable that shows it enabled again", fixture.SnapshotAt(t, disabled, fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Minute)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := confirmsIdle(tt.snap, uuid, disabled); got != tt.want {
				t.Errorf("confirmsIdle = %t, want %t", got, tt.want)
			}
		})
	}
}

func TestHoldPodReady(t *testing.T) {
	const uuid = "{55555555-5555-5555-5555-555555555555}"
	registered := []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusUnregistered, "")}
	starting := append(slices.Clone(registered), fixture.PodNotReady())
	ready := func(ago time.Duration, more ...fixture.RunnerMod) []fixture.RunnerMod {
		return append(append(slices.Clone(registered), fixture.PodRunning(ago)), more...)
	}
	tests := []struct {
		name       string
		before     []fixture.RunnerMod
		after      []fixture.RunnerMod
		readySince time.Duration // ago; 0: the pod says nothing
		want       bool
	}{
		{"a pod ready a moment ago waits for the connection", starting, ready(time.Second), time.Second, true},
		{"a pod ready for longer than the hold is written", starting, ready(podReadyHold), podReadyHold, false},
		{"a pod ready with the runner ONLINE is written with it", starting, ready(time.Second, fixture.Mirrored(bitbucket.RunnerStatusOnline, "")), time.Second, false},
		{"a pod already ready in the written status is not held", ready(2 * time.Second), ready(2 * time.Second), 2 * time.Second, false},
		{"a pod that is not ready is written at once", []fixture.RunnerMod{fixture.Registered(uuid)}, starting, 0, false},
		{"a pod that recovers from failing is written at once", append(slices.Clone(registered), fixture.WithCondition(v1alpha1.ConditionPodReady, metav1.ConditionFalse, runnerpod.ReasonPodFailing, time.Minute)), ready(time.Second), time.Second, false},
		{"a pod without a ready time is written at once", starting, ready(0), 0, false},
		{"a draining runner is written at once", starting, ready(time.Second, fixture.Draining()), time.Second, false},
		{"a runner on a step is written at once", starting, ready(time.Second, fixture.Mirrored(bitbucket.RunnerStatusOnline, "{step-1}")), time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, after := fixture.Runner(tt.before...), fixture.Runner(tt.after...)
			var since time.Time
			if tt.readySince > 0 {
				since = fixture.Now.Add(-tt.readySince)
			}
			got := holdPodReady(&before, &after, since, fixture.Now)
			if got != tt.want {
				t.Fatalf("holdPodReady = %t, want %t", got, tt.want)
			}
			wasReady := conditionReason(before.Status.Conditions, v1alpha1.ConditionPodReady)
			if isReady := conditionReason(after.Status.Conditions, v1alpha1.ConditionPodReady); got && isReady != wasReady {
				t.Errorf("held, but PodReady is %q, want it as written: %q", isReady, wasReady)
			}
		})
	}
}

func TestHoldStart(t *testing.T) {
	const uuid = "{55555555-5555-5555-5555-555555555555}"
	registeredAgo := func(d time.Duration) fixture.RunnerMod {
		return func(r *v1alpha1.Runner) {
			r.Status.RegisteredTime = fixture.MetaTime(fixture.Ago(d))
			r.Status.Conditions = append(r.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionRegistered, Status: metav1.ConditionTrue, Reason: ReasonRegistered})
		}
	}
	starting := func(more ...fixture.RunnerMod) []fixture.RunnerMod {
		return append([]fixture.RunnerMod{fixture.Registered(uuid), registeredAgo(time.Second), fixture.Mirrored(bitbucket.RunnerStatusUnregistered, ""),
			fixture.WithCondition(v1alpha1.ConditionOnline, metav1.ConditionFalse, ReasonNotOnline, time.Second), fixture.InPhase(v1alpha1.RunnerPhaseStarting)}, more...)
	}
	tests := []struct {
		name   string
		stored []fixture.RunnerMod
		after  []fixture.RunnerMod
		want   bool
	}{
		{"a fresh registration with its pod pending waits for the connection", nil, starting(fixture.PodNotReady()), true},
		{"a fresh registration with its pod ready waits for the connection", nil, starting(fixture.PodRunning(time.Second)), true},
		{"the connection is written", nil, starting(fixture.PodRunning(time.Second), fixture.InPhase(v1alpha1.RunnerPhaseIdle)), false},
		{"a registration older than the hold is written", nil, starting(registeredAgo(startHold)), false},
		{"a failing pod is written at once", nil, starting(fixture.WithCondition(v1alpha1.ConditionPodReady, metav1.ConditionFalse, runnerpod.ReasonPodFailing, 0)), false},
		{"a rejected pod is written at once", nil, starting(fixture.WithCondition(v1alpha1.ConditionPodReady, metav1.ConditionFalse, "PodRejected", 0)), false},
		{"a draining runner is written at once", nil, starting(fixture.Draining()), false},
		{"a deleted runner is written at once", nil, starting(fixture.Deleting()), false},
		{"a registration after a failed attempt is written at once", []fixture.RunnerMod{fixture.WithCondition(v1alpha1.ConditionRegistered, metav1.ConditionFalse, ReasonRegistrationFailed, time.Second)}, starting(), false},
		{"a runner whose registration is written is not held here", starting(fixture.PodNotReady()), starting(fixture.PodRunning(time.Second)), false},
		{"a runner not registered is not held", nil, []fixture.RunnerMod{fixture.InPhase(v1alpha1.RunnerPhaseRegistering)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stored, after := fixture.Runner(tt.stored...), fixture.Runner(tt.after...)
			if got := holdStart(stored.Status, &after, fixture.Now); got != tt.want {
				t.Errorf("holdStart = %t, want %t", got, tt.want)
			}
		})
	}
}
