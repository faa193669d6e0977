package scaling_test

import (
	"testing"
	"time"

	"github.com/runnerpool/runnerpool-operator/internal/fixture"
	"github.com/runnerpool/runnerpool-operator/internal/scaling"
)

func TestFailedRunnersAreReplacedOneAtATimeWithBackoff(t *testing.T) {
	now := fixture.Now
	at := func(d time.Duration) time.Time { return now.Add(d) }
	tests := []struct {
		name        string
		state       scaling.ReplaceBackoff
		stuck       int
		now         time.Time
		wantReplace int
		want        scaling.ReplaceBackoff
	}{
		{"nothing stuck, no backoff", scaling.ReplaceBackoff{}, 0, now, 0, scaling.ReplaceBackoff{}},
		{"five stuck: one replaced at once", scaling.ReplaceBackoff{}, 5, now, 1, scaling.ReplaceBackoff{Failures: 1, NotBefore: at(10 * time.Second)}},
		{"the next waits", scaling.ReplaceBackoff{Failures: 1, NotBefore: at(10 * time.Second)}, 4, at(5 * time.Second), 0, scaling.ReplaceBackoff{Failures: 1, NotBefore: at(10 * time.Second)}},
		{"then goes, and the wait doubles", scaling.ReplaceBackoff{Failures: 1, NotBefore: at(10 * time.Second)}, 4, at(10 * time.Second), 1, scaling.ReplaceBackoff{Failures: 2, NotBefore: at(30 * time.Second)}},
		{"the wait is bounded", scaling.ReplaceBackoff{Failures: 20, NotBefore: now}, 1, now, 1, scaling.ReplaceBackoff{Failures: 21, NotBefore: at(scaling.ReplaceBackoffMax)}},
		{"nothing stuck within the quiet period: kept", scaling.ReplaceBackoff{Failures: 3, NotBefore: now}, 0, at(time.Minute), 0, scaling.ReplaceBackoff{Failures: 3, NotBefore: now}},
		{"nothing stuck for the quiet period: reset", scaling.ReplaceBackoff{Failures: 3, NotBefore: now}, 0, at(scaling.ReplaceBackoffMax), 0, scaling.ReplaceBackoff{}},
		{"a NotBefore far ahead counts as the longest wait", scaling.ReplaceBackoff{Failures: 2, NotBefore: at(1000 * time.Hour)}, 1, now, 0, scaling.ReplaceBackoff{Failures: 2, NotBefore: at(scaling.ReplaceBackoffMax)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, got := tt.state.Replace(tt.stuck, tt.now)
			if n != tt.wantReplace || got.Failures != tt.want.Failures || !got.NotBefore.Equal(tt.want.NotBefore) {
				t.Errorf("Replace = %d, %+v; want %d, %+v", n, got, tt.wantReplace, tt.want)
			}
			if back := scaling.ParseReplaceBackoff(got.String()); back.Failures != got.Failures || (got.Failures > 0 && !back.NotBefore.Equal(got.NotBefore.Truncate(time.Second))) {
				t.Errorf("the annotation %q reads back as %+v", got.String(), back)
			}
		})
	}
}

func TestAReplaceBackoffAnnotationEditedByHandIsHarmless(t *testing.T) {
	for _, s := range []string{"", "garbage", "-3/2026-01-01T00:00:00Z", "2/not-a-time", "x/2026-01-01T00:00:00Z"} {
		if got := scaling.ParseReplaceBackoff(s); got.Failures != 0 {
			t.Errorf("ParseReplaceBackoff(%q) = %+v, want no backoff", s, got)
		}
	}
	if got := scaling.ParseReplaceBackoff("99999/2026-01-01T00:00:00Z"); got.Failures != 64 {
		t.Errorf("a huge count reads as %d, want it clamped to 64", got.Failures)
	}
}

func TestAPodThatEndsBeforeItsRunnerComesOnlineIsRecreatedWithBackoff(t *testing.T) {
	now := fixture.Now
	at := func(d time.Duration) time.Time { return now.Add(d) }
	tests := []struct {
		name       string
		hadPod     bool
		record     scaling.ReplaceBackoff
		now        time.Time
		wantCreate bool
		want       scaling.ReplaceBackoff
	}{
		{"the first pod: at once, nothing counted", false, scaling.ReplaceBackoff{}, now, true, scaling.ReplaceBackoff{}},
		{"the first replacement: at once", true, scaling.ReplaceBackoff{}, now, true, scaling.ReplaceBackoff{Failures: 1, NotBefore: at(10 * time.Second)}},
		{"the second waits", true, scaling.ReplaceBackoff{Failures: 1, NotBefore: at(10 * time.Second)}, at(2 * time.Second), false, scaling.ReplaceBackoff{Failures: 1, NotBefore: at(10 * time.Second)}},
		{"then goes, and the next waits twice as long", true, scaling.ReplaceBackoff{Failures: 1, NotBefore: at(10 * time.Second)}, at(10 * time.Second), true, scaling.ReplaceBackoff{Failures: 2, NotBefore: at(30 * time.Second)}},
		{"the fourth waits 40 s", true, scaling.ReplaceBackoff{Failures: 3, NotBefore: now}, now, true, scaling.ReplaceBackoff{Failures: 4, NotBefore: at(80 * time.Second)}},
		{"the wait is bounded", true, scaling.ReplaceBackoff{Failures: 30, NotBefore: now}, now, true, scaling.ReplaceBackoff{Failures: 31, NotBefore: at(scaling.ReplaceBackoffMax)}},
		{"a status edited far ahead waits the longest wait only", true, scaling.ReplaceBackoff{Failures: 2, NotBefore: at(1000 * time.Hour)}, now, false, scaling.ReplaceBackoff{Failures: 2, NotBefore: at(scaling.ReplaceBackoffMax)}},
		{"a Runner that came ONLINE was cleared: at once again", true, scaling.ReplaceBackoff{}, at(time.Hour), true, scaling.ReplaceBackoff{Failures: 1, NotBefore: at(time.Hour + 10*time.Second)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			create, got := scaling.RecreatePod(tt.hadPod, tt.record, tt.now)
			if create != tt.wantCreate || got.Failures != tt.want.Failures || !got.NotBefore.Equal(tt.want.NotBefore) {
				t.Errorf("RecreatePod = %v, %+v; want %v, %+v", create, got, tt.wantCreate, tt.want)
			}
		})
	}
}

func TestOnlyAnOnlineStateNewerThanThePodClearsThePodBackoff(t *testing.T) {
	podStart := fixture.Now
	tests := []struct {
		name       string
		online     bool
		step       string
		stateSince time.Time
		want       bool
	}{
		{"ONLINE since after the pod started", true, "", podStart.Add(3 * time.Second), true},
		{"ONLINE since the pod started, to the second", true, "", podStart, true},
		{"ONLINE from before the pod: the previous pod's agent", true, "", podStart.Add(-time.Minute), false},
		{"running a step", false, "{step}", podStart.Add(-time.Minute), true},
		{"UNREGISTERED", false, "", podStart.Add(time.Minute), false},
		{"OFFLINE", false, "", time.Time{}, false},
		{"ONLINE without a time", true, "", time.Time{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := scaling.ServedByPod(tt.online, tt.step, tt.stateSince, podStart); got != tt.want {
				t.Errorf("ServedByPod = %v, want %v", got, tt.want)
			}
		})
	}
}
