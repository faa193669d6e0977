package controllers

import (
	"encoding/json"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/observe"
)

func TestRunnerPhase(t *testing.T) {
	const uuid = "{33333333-3333-3333-3333-333333333333}"
	registrationRefused := func(reason string) runnerMod {
		return withCondition(v1alpha1.ConditionRegistered, metav1.ConditionFalse, reason, time.Minute)
	}
	podFailingCond := withCondition(v1alpha1.ConditionPodReady, metav1.ConditionFalse, ReasonPodFailing, time.Minute)
	tests := []struct {
		name   string
		runner []runnerMod
		want   v1alpha1.RunnerPhase
	}{
		{"a Runner being deleted is deleting, whatever else holds", []runnerMod{registered(uuid), deleting(), mirrored(bitbucket.RunnerStatusOnline, "{step-1}")}, v1alpha1.RunnerPhaseDeleting},
		{"a new Runner is registering", nil, v1alpha1.RunnerPhaseRegistering},
		{"a Runner whose registration failed transiently is still registering", []runnerMod{registrationRefused(ReasonRegistrationFailed)}, v1alpha1.RunnerPhaseRegistering},
		{"a Runner refused for the runner limit has failed", []runnerMod{registrationRefused(ReasonRunnerLimitReached)}, v1alpha1.RunnerPhaseFailed},
		{"a Runner without usable credentials has failed", []runnerMod{registrationRefused(ReasonCredentials)}, v1alpha1.RunnerPhaseFailed},
		{"a registered runner whose pod cannot start has failed", []runnerMod{registered(uuid), podFailingCond}, v1alpha1.RunnerPhaseFailed},
		{"a registered runner whose pod is not up yet is starting", []runnerMod{registered(uuid), podNotReady(), mirrored(bitbucket.RunnerStatusUnregistered, "")}, v1alpha1.RunnerPhaseStarting},
		{"a runner the pool drains is draining", []runnerMod{registered(uuid), draining(), mirrored(bitbucket.RunnerStatusOnline, "")}, v1alpha1.RunnerPhaseDraining},
		{"a draining runner on its last step is draining, not busy", []runnerMod{registered(uuid), draining(), mirrored(bitbucket.RunnerStatusDisabled, "{step-1}")}, v1alpha1.RunnerPhaseDraining},
		{"a runner still DISABLED after its drain was cancelled is draining until enabled", []runnerMod{registered(uuid), disabledAgo(time.Minute), mirrored(bitbucket.RunnerStatusDisabled, "")}, v1alpha1.RunnerPhaseDraining},
		{"a runner on a step is busy", []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOnline, "{step-1}"), onlineSince(time.Hour)}, v1alpha1.RunnerPhaseBusy},
		{"an ONLINE runner without a step is idle", []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOnline, ""), onlineSince(time.Hour)}, v1alpha1.RunnerPhaseIdle},
		{"a runner that was ONLINE and lost its agent is offline", []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOffline, ""), onlineSince(time.Hour)}, v1alpha1.RunnerPhaseOffline},
		{"an OFFLINE runner that never connected is starting", []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOffline, "")}, v1alpha1.RunnerPhaseStarting},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runner := testRunner(tt.runner...)
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
		runner []runnerMod
		want   bool
	}{
		{"a runner whose pod just became ready and is not ONLINE yet is awaited", []runnerMod{registered(uuid), podRunning(10 * time.Second), mirrored(bitbucket.RunnerStatusUnregistered, "")}, true},
		{"a runner that is ONLINE is not awaited", []runnerMod{registered(uuid), podRunning(10 * time.Second), mirrored(bitbucket.RunnerStatusOnline, "")}, false},
		{"a runner on a step is not awaited", []runnerMod{registered(uuid), podRunning(10 * time.Second), mirrored(bitbucket.RunnerStatusOffline, "{step-1}")}, false},
		{"a runner not registered yet is not awaited", []runnerMod{podRunning(10 * time.Second)}, false},
		{"a draining runner is not awaited", []runnerMod{registered(uuid), draining(), podRunning(10 * time.Second)}, false},
		{"a runner whose pod is not ready is not awaited", []runnerMod{registered(uuid), podNotReady()}, false},
		{"a runner without a pod condition is not awaited", []runnerMod{registered(uuid)}, false},
		{"a runner that has not connected a minute after its pod became ready is no longer awaited", []runnerMod{registered(uuid), podRunning(connectWindow), mirrored(bitbucket.RunnerStatusUnregistered, "")}, false},
	}
	r := &RunnerReconciler{Now: func() time.Time { return now }}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runner := testRunner(tt.runner...)
			if got := r.awaitingConnection(&runner); got != tt.want {
				t.Errorf("awaitingConnection = %t, want %t", got, tt.want)
			}
		})
	}
}

func TestDisabledTimeIsNeverEarlierThanTheDisableOnceSaved(t *testing.T) {
	for _, at := range []time.Time{now, now.Add(time.Millisecond), now.Add(999 * time.Millisecond)} {
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
	disabled := now.Add(-time.Second)
	tests := []struct {
		name string
		snap *observe.Snapshot
		want bool
	}{
		{"no observation", nil, false},
		{"an observation from before the disable, idle", snapshotAt(t, disabled.Add(-time.Millisecond), bbRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Minute)), false},
		{"an observation from after the disable, idle", snapshotAt(t, disabled, bbRunner(uuid, bitbucket.RunnerStatusDisabled, "", time.Minute)), true},
		{"an observation from after the disable, busy", snapshotAt(t, disabled, bbRunner(uuid, bitbucket.RunnerStatusDisabled, "{step-1}", time.Minute)), false},
		{"an observation from after the disable without the runner", snapshotAt(t, disabled), true},
		{"an observation from after the disable that shows it enabled again", snapshotAt(t, disabled, bbRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Minute)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := confirmsIdle(tt.snap, uuid, disabled); got != tt.want {
				t.Errorf("confirmsIdle = %t, want %t", got, tt.want)
			}
		})
	}
}
