package scaling

import (
	"testing"
	"time"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/fixture"
)

func TestPollRequested(t *testing.T) {
	tests := []struct {
		name string
		pool *v1alpha1.RunnerPool
		want time.Time
	}{
		{"a pool without the annotation requested nothing", fixture.Pool(), time.Time{}},
		{"the time a webhook wrote is read back exactly", fixture.Pool(fixture.WithPollRequested("2025-06-02T11:59:58.123456789Z")), time.Date(2025, 6, 2, 11, 59, 58, 123456789, time.UTC)},
		{"a time written by hand without fractions is read", fixture.Pool(fixture.WithPollRequested("2025-06-02T13:59:58+02:00")), time.Date(2025, 6, 2, 11, 59, 58, 0, time.UTC)},
		{"an annotation that is no time requested nothing", fixture.Pool(fixture.WithPollRequested("now")), time.Time{}},
		{"an empty annotation requested nothing", fixture.Pool(fixture.WithPollRequested("")), time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PollRequested(tt.pool); !got.Equal(tt.want) {
				t.Errorf("PollRequested = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestReadsQueue(t *testing.T) {
	// With the 15s poll of fixture.Pool, a webhook's request keeps the queue read for 2*15s+1m.
	const window = 90 * time.Second
	requestedAgo := func(d time.Duration) func(*v1alpha1.RunnerPool) {
		return fixture.WithPollRequested(fixture.Ago(d).Format(time.RFC3339Nano))
	}
	policy := func(p v1alpha1.ScalingPolicy) func(*v1alpha1.RunnerPool) {
		return func(pool *v1alpha1.RunnerPool) { pool.Spec.Scaling.Policy = p }
	}
	idle := Counts{Busy: 1, Idle: 1}
	tests := []struct {
		name      string
		pool      *v1alpha1.RunnerPool
		counts    Counts
		budgetLow bool
		want      bool
	}{
		{"the Queue policy always reads the queue", fixture.Pool(policy(v1alpha1.ScalingPolicyQueue)), Counts{}, false, true},
		{"the Queue policy reads the queue at its maximum too", fixture.Pool(policy(v1alpha1.ScalingPolicyQueue)), Counts{Busy: 10}, false, true},
		{"IdleBuffer with an idle runner does not read the queue", fixture.Pool(), idle, false, false},
		{"IdleBuffer with every runner busy reads the queue: steps may wait that no runner shows", fixture.Pool(), Counts{Busy: 3}, false, true},
		{"IdleBuffer with every runner busy but one on its way does not", fixture.Pool(), Counts{Busy: 3, Starting: 1}, false, false},
		{"IdleBuffer with every runner busy does not while polls are stretched for the budget", fixture.Pool(), Counts{Busy: 3}, true, false},
		{"IdleBuffer with nothing busy does not: nothing shows that steps arrive", fixture.Pool(), Counts{}, false, false},
		{"IdleBuffer whose busy runners and buffer fill its maximum does not: no queue changes its size", fixture.Pool(), Counts{Busy: 9}, false, false},
		{"IdleBuffer one below that point reads", fixture.Pool(), Counts{Busy: 8, Draining: 1}, false, true},
		{"PercentageIdle with every runner busy does not read the queue: its rule does not count it", fixture.Pool(policy(v1alpha1.ScalingPolicyPercentageIdle)), Counts{Busy: 3}, false, false},
		{"IdleBuffer without a webhook does not read the queue", fixture.Pool(), idle, false, false},
		{"IdleBuffer reads the queue right after a webhook", fixture.Pool(requestedAgo(time.Second)), idle, false, true},
		{"IdleBuffer still reads the queue shortly before the window closes", fixture.Pool(requestedAgo(window - time.Second)), idle, false, true},
		{"IdleBuffer stops reading the queue when the window closes", fixture.Pool(requestedAgo(window)), idle, false, false},
		{"PercentageIdle reads the queue after a webhook too", fixture.Pool(policy(v1alpha1.ScalingPolicyPercentageIdle), requestedAgo(time.Second)), idle, false, true},
		{"a request from a replica whose clock runs ahead counts as recent", fixture.Pool(requestedAgo(-10 * time.Second)), idle, false, true},
		{"an annotation that is no time does not read the queue", fixture.Pool(fixture.WithPollRequested("soon")), idle, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ReadsQueue(tt.pool, fixture.Now, tt.counts, tt.budgetLow); got != tt.want {
				t.Errorf("ReadsQueue = %t, want %t", got, tt.want)
			}
		})
	}
}
