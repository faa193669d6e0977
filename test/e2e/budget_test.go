package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/budgetstore"
)

// budgetClient is a Bitbucket client drawing from the running operator's budget registry for
// the budget test's own credential, as the operator's clients for a pool would.
func budgetClient(t *testing.T) *bitbucket.Client {
	t.Helper()
	c, err := bitbucket.New(bitbucket.Config{
		BaseURL:     sys.BBSimURL,
		Credentials: bitbucket.Credentials{AccessToken: budgetToken},
		Budgets:     sys.Budgets,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// savedRequests is the number of requests the budget Lease of key records, -1 when there is
// none.
func savedRequests(ctx context.Context, key string) (int, error) {
	var lease coordinationv1.Lease
	if err := sys.Client.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: budgetstore.LeaseName(key)}, &lease); err != nil {
		return -1, client.IgnoreNotFound(err)
	}
	state, err := bitbucket.ParseBudgetState(lease.Annotations[budgetstore.AnnotationState])
	if err != nil {
		return -1, err
	}
	return state.Total(), nil
}

// A restarted operator (a new leader, a new process) must count the requests its predecessor
// sent in the last hour: Bitbucket's rolling window does.
func TestARestartedOperatorResumesTheSpentRequestBudget(t *testing.T) {
	ctx := t.Context()
	const spent = 40
	first := budgetClient(t)
	scope := bitbucket.Scope{Workspace: bbsim.DefaultWorkspaceUUID}
	for i := 0; i < spent; i++ {
		if _, err := first.ListRunners(ctx, scope); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	key := first.BudgetKey()
	// Saved by the periodic write, not by the stop: a crash gets no last word.
	eventually(t, 15*time.Second, "the budget Lease to record the requests", func() (bool, string) {
		n, err := savedRequests(ctx, key)
		if err != nil {
			return false, err.Error()
		}
		return n >= spent, fmt.Sprintf("the Lease records %d requests", n)
	})

	if err := sys.StopManager(); err != nil {
		t.Fatal(err)
	}
	if err := sys.StartManager(testLogger()); err != nil {
		t.Fatal(err)
	}
	second := budgetClient(t)
	if second.Budget() == first.Budget() {
		t.Fatal("the restarted operator shares the old budget; the test would prove nothing")
	}
	// The first request of the new process waits for the saved budget, then counts on top.
	if _, err := second.ListRunners(ctx, scope); err != nil {
		t.Fatal(err)
	}
	if used := second.Budget().Used(); used < spent+1 {
		t.Errorf("the restarted operator counts %d requests in the last hour, want at least %d", used, spent+1)
	}
	if remaining := second.Budget().Remaining(); remaining > bitbucket.DefaultHourlyLimit-spent-1 {
		t.Errorf("Remaining = %d after the restart, want at most %d", remaining, bitbucket.DefaultHourlyLimit-spent-1)
	}
}
