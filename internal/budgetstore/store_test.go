package budgetstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/test/framework"
)

const testNamespace = "runnerpool-system"

func startAPIServer(t *testing.T) client.Client {
	t.Helper()
	cp := framework.StartForTest(t, framework.Options{Nodes: -1})
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}); err != nil {
		t.Fatal(err)
	}
	return c
}

func newStore(c client.Client) *Store {
	return &Store{Client: c, Namespace: testNamespace, Registry: bitbucket.NewBudgetRegistry(), Identity: "test", Interval: time.Hour, Logger: logr.Discard()}
}

func minuteAgo(d time.Duration) time.Time { return time.Now().Add(-d).UTC().Truncate(time.Minute) }

func putLease(t *testing.T, c client.Client, key, annotation string) {
	t.Helper()
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{
		Name: LeaseName(key), Namespace: testNamespace,
		Labels:      map[string]string{LabelBudget: "true"},
		Annotations: map[string]string{AnnotationState: annotation},
	}}
	if err := c.Create(t.Context(), lease); err != nil {
		t.Fatal(err)
	}
}

func getState(t *testing.T, c client.Client, key string) (bitbucket.BudgetState, string) {
	t.Helper()
	var lease coordinationv1.Lease
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: testNamespace, Name: LeaseName(key)}, &lease); err != nil {
		t.Fatalf("get lease of %s: %v", key, err)
	}
	state, err := bitbucket.ParseBudgetState(lease.Annotations[AnnotationState])
	if err != nil {
		t.Fatalf("lease of %s: %v", key, err)
	}
	return state, lease.ResourceVersion
}

func TestStoreWithTheAPIServer(t *testing.T) {
	c := startAPIServer(t)

	t.Run("load restores, drops expired and survives unreadable Leases", func(t *testing.T) {
		putLease(t, c, "live", bitbucket.BudgetState{Start: minuteAgo(10 * time.Minute), Counts: []int{7, 0, 5}}.String())
		putLease(t, c, "expired", bitbucket.BudgetState{Start: minuteAgo(3 * time.Hour), Counts: []int{900}}.String())
		putLease(t, c, "garbled", "not a budget")

		s := newStore(c)
		s.Registry.Hold()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Start(ctx) }()
		b := s.Registry.Get("live", 100, nil)
		// The registry stays held until the load, so a client could not send before.
		eventually(t, "the live budget to be restored", func() (bool, string) {
			return b.Used() == 12, fmt.Sprintf("Used %d", b.Used())
		})
		err := c.Get(t.Context(), client.ObjectKey{Namespace: testNamespace, Name: LeaseName("expired")}, &coordinationv1.Lease{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("the expired Lease is still there: %v", err)
		}
		// The unreadable record is replaced by the next save of that budget.
		garbled := s.Registry.Get("garbled", 100, nil)
		garbled.Restore(bitbucket.BudgetState{Start: minuteAgo(0), Counts: []int{2}})
		cancel() // a graceful stop saves once more
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if state, _ := getState(t, c, "garbled"); state.Total() != 2 {
			t.Errorf("the garbled Lease now records %d requests, want 2", state.Total())
		}
	})

	t.Run("a hand-edited Lease is clamped", func(t *testing.T) {
		putLease(t, c, "edited", "v1;start="+time.Now().Add(-5*time.Minute).UTC().Format(time.RFC3339)+";counts=-4,99999999,3;blocked=9999-01-01T00:00:00Z")
		putLease(t, c, "future", "v1;start=9000-01-01T00:00:00Z;counts=1000")
		s := newStore(c)
		s.Registry.Hold()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Start(ctx) }()
		edited := s.Registry.Get("edited", 100, nil)
		future := s.Registry.Get("future", 100, nil)
		eventually(t, "the edited budget to be restored", func() (bool, string) {
			return edited.Used() > 0, fmt.Sprintf("Used %d", edited.Used())
		})
		if got := edited.Used(); got != 100 {
			t.Errorf("edited budget counts %d requests, want the limit 100", got)
		}
		if until := edited.State().BlockedUntil; until.After(time.Now().Add(time.Hour + time.Minute)) {
			t.Errorf("edited budget blocked until %s, more than an hour", until)
		}
		if got := future.Used(); got != 0 {
			t.Errorf("a budget from the year 9000 counts %d requests, want 0", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})

	t.Run("saves only budgets that changed", func(t *testing.T) {
		s := newStore(c)
		b := s.Registry.Get("quiet", 100, nil)
		b.Restore(bitbucket.BudgetState{Start: minuteAgo(0), Counts: []int{3}})
		s.Save(t.Context())
		_, first := getState(t, c, "quiet")
		s.Save(t.Context())
		if _, second := getState(t, c, "quiet"); second != first {
			t.Errorf("an unchanged budget was written again (resourceVersion %s -> %s)", first, second)
		}
		s.Registry.Get("unused", 100, nil)
		s.Save(t.Context())
		if err := c.Get(t.Context(), client.ObjectKey{Namespace: testNamespace, Name: LeaseName("unused")}, &coordinationv1.Lease{}); !apierrors.IsNotFound(err) {
			t.Errorf("a budget with no request got a Lease: %v", err)
		}
	})

	t.Run("a Lease written behind its back is merged, not lost", func(t *testing.T) {
		s := newStore(c)
		b := s.Registry.Get("raced", 100, nil)
		now := minuteAgo(0) // one minute for both of ours, so they merge to the larger
		b.Restore(bitbucket.BudgetState{Start: now, Counts: []int{4}})
		s.Save(t.Context())

		// Another writer (an old leader's last save) records more in an earlier minute.
		var lease coordinationv1.Lease
		if err := c.Get(t.Context(), client.ObjectKey{Namespace: testNamespace, Name: LeaseName("raced")}, &lease); err != nil {
			t.Fatal(err)
		}
		lease.Annotations[AnnotationState] = bitbucket.BudgetState{Start: minuteAgo(5 * time.Minute), Counts: []int{30}}.String()
		if err := c.Update(t.Context(), &lease); err != nil {
			t.Fatal(err)
		}
		b.Restore(bitbucket.BudgetState{Start: now, Counts: []int{6}})
		s.Save(t.Context()) // conflicts, and reads the other write
		s.Save(t.Context())
		if state, _ := getState(t, c, "raced"); state.Total() != 36 {
			t.Errorf("the Lease records %d requests, want 36: ours and the other writer's", state.Total())
		}
		if got := b.Used(); got != 36 {
			t.Errorf("the budget counts %d requests, want 36", got)
		}
	})
}

func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
