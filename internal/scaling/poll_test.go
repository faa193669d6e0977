package scaling_test

import (
	"testing"
	"time"

	"github.com/runnerpool/runnerpool-operator/internal/fixture"
	"github.com/runnerpool/runnerpool-operator/internal/scaling"
)

func TestPollIntervalStretchesOnlyWhenTheBudgetRunsLow(t *testing.T) {
	base := 15 * time.Second
	tests := []struct {
		name             string
		remaining, limit int
		want             time.Duration
	}{
		{"a full budget keeps the pace", 1000, 1000, base},
		{"a quarter left still keeps the pace", 250, 1000, base},
		{"an eighth left doubles the interval", 125, 1000, 2 * base},
		{"almost nothing left stretches to the cap", 1, 1000, scaling.MaxPollStretch * base},
		{"nothing left stretches to the cap", 0, 1000, scaling.MaxPollStretch * base},
		{"no budget configured keeps the pace", 0, 0, base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := scaling.PollInterval(base, tt.remaining, tt.limit); got != tt.want {
				t.Errorf("PollInterval(%s, %d, %d) = %s, want %s", base, tt.remaining, tt.limit, got, tt.want)
			}
		})
	}
}

// budget is a request budget with this much of its limit left.
type budget struct{ remaining, limit int }

func (b budget) Remaining() int { return b.remaining }
func (b budget) Limit() int     { return b.limit }

func TestEffectivePollIsThePoolsIntervalStretchedByTheBudget(t *testing.T) {
	pool := fixture.Pool() // polls every 15s
	tests := []struct {
		name   string
		budget scaling.Budget
		want   time.Duration
	}{
		{"a client without a budget polls at the pool's pace", nil, 15 * time.Second},
		{"a budget with plenty left keeps the pace", budget{900, 1000}, 15 * time.Second},
		{"a budget running low stretches the interval", budget{125, 1000}, 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := scaling.EffectivePoll(pool, tt.budget); got != tt.want {
				t.Errorf("EffectivePoll = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestFreshnessCutoff(t *testing.T) {
	const poll = 15 * time.Second
	tests := []struct {
		name      string
		requested time.Time
		want      time.Time
	}{
		{"without a request a list one poll old will do", time.Time{}, fixture.Ago(poll)},
		{"a request older than a poll changes nothing", fixture.Ago(time.Minute), fixture.Ago(poll)},
		{"a recent request needs a list made after it", fixture.Ago(3 * time.Second), fixture.Ago(3 * time.Second)},
		{"a request made now needs a list from now", fixture.Now, fixture.Now},
		{"a request from a clock a little ahead counts as now", fixture.Now.Add(2 * time.Second), fixture.Now},
		{"a request far in the future counts as now too", fixture.Now.Add(24 * time.Hour), fixture.Now},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := scaling.FreshnessCutoff(fixture.Now, poll, tt.requested); !got.Equal(tt.want) {
				t.Errorf("FreshnessCutoff = %s ago, want %s ago", fixture.Now.Sub(got), fixture.Now.Sub(tt.want))
			}
		})
	}
}

func TestWakesSpendAtMostHalfTheBudget(t *testing.T) {
	tests := []struct {
		name   string
		budget scaling.Budget
		want   bool
	}{
		{"no budget kept", nil, true},
		{"no limit known", budget{remaining: 0, limit: 0}, true},
		{"budget untouched", budget{remaining: 1000, limit: 1000}, true},
		{"just over half left", budget{remaining: 501, limit: 1000}, true},
		{"half left", budget{remaining: 500, limit: 1000}, false},
		{"a quarter left: polls stretch, wakes wait", budget{remaining: 250, limit: 1000}, false},
		{"spent", budget{remaining: 0, limit: 1000}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := scaling.HonoursWake(tt.budget); got != tt.want {
				t.Errorf("HonoursWake = %t, want %t", got, tt.want)
			}
		})
	}
}
