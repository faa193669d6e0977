package runnerlist_test

import (
	"testing"
	"time"

	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/fixture"
	"github.com/runnerpool/runnerpool-operator/internal/runnerlist"
)

func TestFingerprint(t *testing.T) {
	const uuid = "{55555555-5555-5555-5555-555555555555}"
	idle := fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Minute)
	busy := fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "{step-1}", time.Minute)
	nextStep := fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "{step-2}", time.Minute)
	offline := fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOffline, "", time.Minute)
	unknownStep := idle
	unknownStep.State.Step = &bitbucket.StepRef{}
	laterIdle := fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Second)
	laterIdle.UpdatedOn = fixture.Now

	tests := []struct {
		name    string
		a, b    bitbucket.Runner
		changed bool
	}{
		{"taking a step is a change", idle, busy, true},
		{"finishing a step is a change", busy, idle, true},
		{"moving on to the next step is a change", busy, nextStep, true},
		{"going OFFLINE is a change", idle, offline, true},
		{"taking a step Bitbucket does not identify is a change", idle, unknownStep, true},
		{"a new timestamp alone is no change", idle, laterIdle, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if changed := runnerlist.Fingerprint(tt.a) != runnerlist.Fingerprint(tt.b); changed != tt.changed {
				t.Errorf("fingerprints %q and %q: changed=%t, want %t", runnerlist.Fingerprint(tt.a), runnerlist.Fingerprint(tt.b), changed, tt.changed)
			}
		})
	}
}
