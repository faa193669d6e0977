package controllers

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

func TestExpectationsCountCreatedRunnersUntilTheCacheShowsThem(t *testing.T) {
	pool := client.ObjectKey{Namespace: "ci", Name: "builds"}
	other := client.ObjectKey{Namespace: "ci", Name: "other"}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	listed := func(names ...string) []v1alpha1.Runner {
		var out []v1alpha1.Runner
		for _, n := range names {
			out = append(out, v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{Name: n}})
		}
		return out
	}

	var e expectations
	if got := e.pending(pool, nil, t0); got != nil {
		t.Fatalf("nothing created yet, got %v", got)
	}
	e.add(pool, "a", t0)
	e.add(pool, "b", t0)
	e.add(other, "x", t0)

	got := e.pending(pool, listed("a"), t0.Add(time.Second))
	slices.Sort(got)
	if !slices.Equal(got, []string{"b"}) {
		t.Fatalf("a runner the cache does not show yet is pending: got %v, want [b]", got)
	}
	if got := e.pending(pool, nil, t0.Add(2*time.Second)); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("a runner seen once is not expected again: got %v, want [b]", got)
	}
	if got := e.pending(pool, nil, t0.Add(expectationTimeout+time.Second)); got != nil {
		t.Fatalf("a create never seen stops holding a slot after the timeout: got %v", got)
	}
	if got := e.pending(other, nil, t0); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("pools are kept apart: got %v", got)
	}
	e.forget(other)
	if got := e.pending(other, nil, t0); got != nil {
		t.Fatalf("a forgotten pool expects nothing: got %v", got)
	}
}
