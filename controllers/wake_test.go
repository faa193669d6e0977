package controllers

import (
	"testing"
	"time"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

func withPollRequested(value string) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) {
		p.Annotations = map[string]string{v1alpha1.AnnotationPollRequested: value}
	}
}

func TestPollRequested(t *testing.T) {
	tests := []struct {
		name string
		pool *v1alpha1.RunnerPool
		want time.Time
	}{
		{"a pool without the annotation requested nothing", testPool(), time.Time{}},
		{"the time a webhook wrote is read back exactly", testPool(withPollRequested("2025-06-02T11:59:58.123456789Z")), time.Date(2025, 6, 2, 11, 59, 58, 123456789, time.UTC)},
		{"a time written by hand without fractions is read", testPool(withPollRequested("2025-06-02T13:59:58+02:00")), time.Date(2025, 6, 2, 11, 59, 58, 0, time.UTC)},
		{"an annotation that is no time requested nothing", testPool(withPollRequested("now")), time.Time{}},
		{"an empty annotation requested nothing", testPool(withPollRequested("")), time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pollRequested(tt.pool); !got.Equal(tt.want) {
				t.Errorf("pollRequested = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestSameUUID(t *testing.T) {
	const braced = "{0b3f8a1e-2c4d-4e5f-8a9b-0c1d2e3f4a5b}"
	tests := []struct {
		name string
		a, b string
		want bool
	}{
		{"a UUID is itself", braced, braced, true},
		{"braces do not matter", braced, "0b3f8a1e-2c4d-4e5f-8a9b-0c1d2e3f4a5b", true},
		{"case does not matter", braced, "{0B3F8A1E-2C4D-4E5F-8A9B-0C1D2E3F4A5B}", true},
		{"different UUIDs differ", braced, "{ffffffff-2c4d-4e5f-8a9b-0c1d2e3f4a5b}", false},
		{"an unset UUID matches nothing", "", braced, false},
		{"two unset UUIDs do not match", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sameUUID(tt.a, tt.b); got != tt.want {
				t.Errorf("sameUUID(%q, %q) = %t, want %t", tt.a, tt.b, got, tt.want)
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	const uuid = "{55555555-5555-5555-5555-555555555555}"
	idle := bbRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Minute)
	busy := bbRunner(uuid, bitbucket.RunnerStatusOnline, "{step-1}", time.Minute)
	nextStep := bbRunner(uuid, bitbucket.RunnerStatusOnline, "{step-2}", time.Minute)
	offline := bbRunner(uuid, bitbucket.RunnerStatusOffline, "", time.Minute)
	unknownStep := idle
	unknownStep.State.Step = &bitbucket.StepRef{}
	laterIdle := bbRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Second)
	laterIdle.UpdatedOn = now

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
			if changed := fingerprint(tt.a) != fingerprint(tt.b); changed != tt.changed {
				t.Errorf("fingerprints %q and %q: changed=%t, want %t", fingerprint(tt.a), fingerprint(tt.b), changed, tt.changed)
			}
		})
	}
}
