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
	tests := []struct {
		name string
		pool *v1alpha1.RunnerPool
		want bool
	}{
		{"the Queue policy always reads the queue", fixture.Pool(policy(v1alpha1.ScalingPolicyQueue)), true},
		{"IdleBuffer without a webhook does not read the queue", fixture.Pool(), false},
		{"IdleBuffer reads the queue right after a webhook", fixture.Pool(requestedAgo(time.Second)), true},
		{"IdleBuffer still reads the queue shortly before the window closes", fixture.Pool(requestedAgo(window - time.Second)), true},
		{"IdleBuffer stops reading the queue when the window closes", fixture.Pool(requestedAgo(window)), false},
		{"PercentageIdle reads the queue after a webhook too", fixture.Pool(policy(v1alpha1.ScalingPolicyPercentageIdle), requestedAgo(time.Second)), true},
		{"a request from a replica whose clock runs ahead counts as recent", fixture.Pool(requestedAgo(-10 * time.Second)), true},
		{"an annotation that is no time does not read the queue", fixture.Pool(fixture.WithPollRequested("soon")), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ReadsQueue(tt.pool, fixture.Now); got != tt.want {
				t.Errorf("ReadsQueue = %t, want %t", got, tt.want)
			}
		})
	}
}
