package controllers

import (
	"testing"
	"time"

	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

func TestStateFlipsSpaceOutOppositeChanges(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	const uuid = "{a}"
	tests := []struct {
		name   string
		record bool // whether uuid was disabled at t0
		status bitbucket.RunnerStatus
		at     time.Time
		want   time.Duration
	}{
		{"a runner never changed may change", false, bitbucket.RunnerStatusEnabled, t0, 0},
		{"the same state again is not held back", true, bitbucket.RunnerStatusDisabled, t0.Add(time.Second), 0},
		{"the opposite state right after waits out the interval", true, bitbucket.RunnerStatusEnabled, t0.Add(3 * time.Second), minStateFlipInterval - 3*time.Second},
		{"the opposite state after the interval goes at once", true, bitbucket.RunnerStatusEnabled, t0.Add(minStateFlipInterval), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f stateFlips
			if tt.record {
				f.record(uuid, bitbucket.RunnerStatusDisabled, t0)
			}
			if got := f.wait(uuid, tt.status, tt.at); got != tt.want {
				t.Errorf("wait = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestStateFlipsForgetOldChanges(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var f stateFlips
	f.record("{old}", bitbucket.RunnerStatusDisabled, t0)
	f.record("{new}", bitbucket.RunnerStatusDisabled, t0.Add(minStateFlipInterval))
	if _, ok := f.last["{old}"]; ok || len(f.last) != 1 {
		t.Errorf("after the interval only the newest change is kept, got %v", f.last)
	}
}
