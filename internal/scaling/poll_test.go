package scaling_test

import (
	"testing"
	"time"

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
