package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

func TestPoolWakesDelay(t *testing.T) {
	pool := types.NamespacedName{Namespace: "ci", Name: "builds"}
	other := types.NamespacedName{Namespace: "ci", Name: "tests"}
	start := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		started bool
		at      time.Duration // after the start of the pool's last reconcile
		key     types.NamespacedName
		want    time.Duration
	}{
		{"a pool never reconciled is reconciled at once", false, 0, pool, 0},
		{"a change right after a reconcile waits out the spacing", true, 0, pool, runnerWakeSpacing},
		{"a change during the spacing waits for the rest of it", true, 300 * time.Millisecond, pool, runnerWakeSpacing - 300*time.Millisecond},
		{"a change after a quiet spell is reconciled at once", true, runnerWakeSpacing + time.Millisecond, pool, 0},
		{"another pool's reconcile does not hold this one back", true, 0, other, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w poolWakes
			if tt.started {
				w.started(pool, start)
			}
			if got := w.delay(tt.key, start.Add(tt.at)); got != tt.want {
				t.Errorf("delay = %s, want %s", got, tt.want)
			}
		})
	}
	var w poolWakes
	w.started(pool, start)
	w.forget(pool)
	if got := w.delay(pool, start); got != 0 {
		t.Errorf("delay after forget = %s, want 0", got)
	}
}
