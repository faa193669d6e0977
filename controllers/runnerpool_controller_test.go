package controllers

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/credentials"
	"github.com/runnerpool/runnerpool-operator/internal/fixture"
)

func TestSetReady(t *testing.T) {
	cond := func(condType string, status metav1.ConditionStatus, reason, message string) metav1.Condition {
		return metav1.Condition{Type: condType, Status: status, Reason: reason, Message: message}
	}
	tests := []struct {
		name        string
		min, ready  int32
		busy, idle  int32
		conditions  []metav1.Condition
		wantStatus  metav1.ConditionStatus
		wantReason  string
		wantMessage string
	}{
		{
			name: "enough ONLINE runners make the pool ready",
			min:  2, ready: 3, busy: 1, idle: 2,
			conditions:  []metav1.Condition{cond(v1alpha1.ConditionCredentialsValid, metav1.ConditionTrue, credentials.ReasonCredentialsAccepted, "")},
			wantStatus:  metav1.ConditionTrue,
			wantReason:  ReasonAsExpected,
			wantMessage: "3 runners ONLINE (1 busy, 2 idle)",
		},
		{
			name:        "a pool scaled to zero is ready without runners",
			min:         0,
			wantStatus:  metav1.ConditionTrue,
			wantReason:  ReasonAsExpected,
			wantMessage: "0 runners ONLINE (0 busy, 0 idle)",
		},
		{
			name: "credentials Bitbucket refuses make the pool not ready, with their fix",
			min:  1, ready: 1, idle: 1,
			conditions:  []metav1.Condition{cond(v1alpha1.ConditionCredentialsValid, metav1.ConditionFalse, credentials.ReasonSecretNotFound, "Secret \"bitbucket\" not found")},
			wantStatus:  metav1.ConditionFalse,
			wantReason:  credentials.ReasonSecretNotFound,
			wantMessage: "Secret \"bitbucket\" not found",
		},
		{
			name: "an unreachable Bitbucket makes the pool not ready",
			min:  1, ready: 1, idle: 1,
			conditions:  []metav1.Condition{cond(v1alpha1.ConditionScalingActive, metav1.ConditionFalse, ReasonBitbucketError, "connection refused")},
			wantStatus:  metav1.ConditionFalse,
			wantReason:  ReasonBitbucketError,
			wantMessage: "connection refused",
		},
		{
			name: "a rate limit alone leaves a pool with enough runners ready",
			min:  1, ready: 1, idle: 1,
			conditions:  []metav1.Condition{cond(v1alpha1.ConditionScalingActive, metav1.ConditionFalse, ReasonRateLimited, "wait")},
			wantStatus:  metav1.ConditionTrue,
			wantReason:  ReasonAsExpected,
			wantMessage: "1 runners ONLINE (0 busy, 1 idle)",
		},
		{
			name: "fewer ONLINE runners than the minimum means runners are starting",
			min:  2, ready: 1, idle: 1,
			wantStatus:  metav1.ConditionFalse,
			wantReason:  ReasonRunnersStarting,
			wantMessage: "1 of at least 2 runners are ONLINE",
		},
		{
			name: "fewer ONLINE runners than the minimum while pods wait for nodes says so",
			min:  2, ready: 1, idle: 1,
			conditions:  []metav1.Condition{cond(v1alpha1.ConditionScalingActive, metav1.ConditionFalse, ReasonPodsPending, "pending")},
			wantStatus:  metav1.ConditionFalse,
			wantReason:  ReasonPodsPending,
			wantMessage: "1 of at least 2 runners are ONLINE",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := fixture.Pool(func(p *v1alpha1.RunnerPool) {
				p.Generation = 4
				p.Spec.MinRunners = tt.min
				p.Status.Ready, p.Status.Busy, p.Status.Idle = tt.ready, tt.busy, tt.idle
				p.Status.Conditions = tt.conditions
			})
			setReady(pool)
			got := meta.FindStatusCondition(pool.Status.Conditions, v1alpha1.ConditionReady)
			if got == nil {
				t.Fatal("no Ready condition")
			}
			if got.Status != tt.wantStatus || got.Reason != tt.wantReason || got.Message != tt.wantMessage {
				t.Errorf("Ready = %s %s %q, want %s %s %q", got.Status, got.Reason, got.Message, tt.wantStatus, tt.wantReason, tt.wantMessage)
			}
			if got.ObservedGeneration != 4 {
				t.Errorf("Ready observedGeneration = %d, want 4", got.ObservedGeneration)
			}
		})
	}
}

func TestBitbucketNames(t *testing.T) {
	withUID := func(uid string) *v1alpha1.RunnerPool {
		return fixture.Pool(func(p *v1alpha1.RunnerPool) { p.UID = types.UID(uid) })
	}
	tests := []struct {
		name       string
		pool       *v1alpha1.RunnerPool
		wantPrefix string
	}{
		{"the marker holds the first 8 characters of the pool's UID", withUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"), "rp-0f1e2d3c-"},
		{"a short UID is used whole", withUID("abc"), "rp-abc-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := BitbucketNamePrefix(tt.pool); got != tt.wantPrefix {
				t.Errorf("BitbucketNamePrefix = %q, want %q", got, tt.wantPrefix)
			}
			name := BitbucketRunnerName(tt.pool, "build-x1y2z")
			if name != tt.wantPrefix+"build-x1y2z" || !strings.HasPrefix(name, BitbucketNamePrefix(tt.pool)) {
				t.Errorf("BitbucketRunnerName = %q, want the marker %q then the Runner's name", name, tt.wantPrefix)
			}
		})
	}

	t.Run("pools of the same name in two clusters mark their runners differently", func(t *testing.T) {
		a := withUID("aaaaaaaa-0000-0000-0000-000000000000")
		b := withUID("bbbbbbbb-0000-0000-0000-000000000000")
		if BitbucketNamePrefix(a) == BitbucketNamePrefix(b) {
			t.Errorf("both pools use the marker %q", BitbucketNamePrefix(a))
		}
	})
}

func TestRunnerName(t *testing.T) {
	tests := []struct {
		name     string
		poolName string
	}{
		{"a short pool name is kept whole", "build"},
		{"a pool name of 50 characters is kept whole", strings.Repeat("a", 50)},
		{"a pool name of 63 characters is shortened", strings.Repeat("b", 63)},
		{"a pool name of 253 characters is shortened", strings.Repeat("c", 253)},
		{"a pool name cut right after a dot still gives a valid name", strings.Repeat("d", 49) + ".tail-of-a-long-name"},
		{"a pool name cut right after a dash still gives a valid name", strings.Repeat("e", 49) + "-tail-of-a-long-name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := fixture.Pool(func(p *v1alpha1.RunnerPool) { p.Name = tt.poolName })
			got := runnerName(pool)
			if len(got) > validation.LabelValueMaxLength {
				t.Errorf("runnerName = %q, %d characters, longer than a label value may be", got, len(got))
			}
			if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
				t.Errorf("runnerName = %q is not a valid object name: %v", got, errs)
			}
			if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
				t.Errorf("runnerName = %q is not a valid label value: %v", got, errs)
			}
			keep := min(len(tt.poolName), 50)
			if !strings.HasPrefix(got, strings.TrimRight(tt.poolName[:keep], ".")) {
				t.Errorf("runnerName = %q does not start with the pool name %q", got, tt.poolName)
			}
		})
	}

	t.Run("two runners of a pool get different names", func(t *testing.T) {
		pool := fixture.Pool()
		seen := map[string]bool{}
		for range 20 {
			seen[runnerName(pool)] = true
		}
		if len(seen) < 2 {
			t.Errorf("20 names drawn, %d distinct", len(seen))
		}
	})
}

func ptr[T any](v T) *T { return &v }

func TestCreatedNote(t *testing.T) {
	many := make([]string, 12)
	for i := range many {
		many[i] = fmt.Sprintf("p-%02d", 11-i)
	}
	tests := []struct {
		name   string
		names  []string
		wanted int
		want   string
	}{
		{"one runner", []string{"p-a"}, 1, "Created runner p-a"},
		{"a batch, sorted", []string{"p-b", "p-a"}, 2, "Created 2 runners: p-a, p-b"},
		{"some creates failed", []string{"p-a"}, 3, "Created runner p-a (2 of 3 creates failed; retrying)"},
		{"more names than an event lists", many, 12, "Created 12 runners: p-00, p-01, p-02, p-03, p-04, p-05, p-06, p-07, p-08, p-09 and 2 more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := createdNote(tt.names, tt.wanted); got != tt.want {
				t.Errorf("createdNote = %q, want %q", got, tt.want)
			}
		})
	}
}
