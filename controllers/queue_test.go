package controllers

import (
	"testing"
	"time"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

func TestWantsQueue(t *testing.T) {
	// With the 15s poll of testPool, a webhook's request keeps the queue read for 2*15s+1m.
	const window = 90 * time.Second
	requestedAgo := func(d time.Duration) func(*v1alpha1.RunnerPool) {
		return withPollRequested(ago(d).Format(time.RFC3339Nano))
	}
	policy := func(p v1alpha1.ScalingPolicy) func(*v1alpha1.RunnerPool) {
		return func(pool *v1alpha1.RunnerPool) { pool.Spec.Scaling.Policy = p }
	}
	tests := []struct {
		name string
		pool *v1alpha1.RunnerPool
		want bool
	}{
		{"the Queue policy always reads the queue", testPool(policy(v1alpha1.ScalingPolicyQueue)), true},
		{"IdleBuffer without a webhook does not read the queue", testPool(), false},
		{"IdleBuffer reads the queue right after a webhook", testPool(requestedAgo(time.Second)), true},
		{"IdleBuffer still reads the queue shortly before the window closes", testPool(requestedAgo(window - time.Second)), true},
		{"IdleBuffer stops reading the queue when the window closes", testPool(requestedAgo(window)), false},
		{"PercentageIdle reads the queue after a webhook too", testPool(policy(v1alpha1.ScalingPolicyPercentageIdle), requestedAgo(time.Second)), true},
		{"a request from a replica whose clock runs ahead counts as recent", testPool(requestedAgo(-10 * time.Second)), true},
		{"an annotation that is no time does not read the queue", testPool(withPollRequested("soon")), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := wantsQueue(tt.pool, now); got != tt.want {
				t.Errorf("wantsQueue = %t, want %t", got, tt.want)
			}
		})
	}
}
