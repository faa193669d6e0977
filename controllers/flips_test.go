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
		name     string
		recorded bitbucket.RunnerStatus // what uuid was set to at t0, if anything
		status   bitbucket.RunnerStatus
		at       time.Time
		want     time.Duration
	}{
		{"a runner never changed may change", "", bitbucket.RunnerStatusDisabled, t0, 0},
		{"the same state again is not held back", bitbucket.RunnerStatusDisabled, bitbucket.RunnerStatusDisabled, t0.Add(time.Second), 0},
		{"a runner needed again is enabled at once", bitbucket.RunnerStatusDisabled, bitbucket.RunnerStatusEnabled, t0.Add(time.Second), 0},
		{"a disable right after an enable waits out the interval", bitbucket.RunnerStatusEnabled, bitbucket.RunnerStatusDisabled, t0.Add(3 * time.Second), minStateFlipInterval - 3*time.Second},
		{"a disable after the interval goes at once", bitbucket.RunnerStatusEnabled, bitbucket.RunnerStatusDisabled, t0.Add(minStateFlipInterval), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f stateFlips
			if tt.recorded != "" {
				f.record(uuid, tt.recorded, t0)
			}
			if got := f.wait(uuid, tt.status, tt.at); got != tt.want {
				t.Errorf("wait = %s, want %s", got, tt.want)
			}
		})
	}
}

// A loop that drains and un-drains a runner as fast as the hold lets it sends at most six state
// changes a minute.
func TestStateFlipsBoundALoop(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	end := now.Add(time.Minute)
	var f stateFlips
	sent := 0
	next := bitbucket.RunnerStatusDisabled
	for now.Before(end) {
		if f.wait("{a}", next, now) == 0 {
			f.record("{a}", next, now)
			sent++
			if next == bitbucket.RunnerStatusDisabled {
				next = bitbucket.RunnerStatusEnabled
			} else {
				next = bitbucket.RunnerStatusDisabled
			}
		}
		now = now.Add(100 * time.Millisecond)
	}
	if sent > 6 {
		t.Errorf("%d state changes in a minute, want at most 6", sent)
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
