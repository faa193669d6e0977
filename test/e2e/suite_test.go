// Package e2e checks the operator end to end: a real kube-apiserver, scheduler and garbage
// collector, kwok nodes, bbsim playing Bitbucket and its runner agents, and the operator's
// controllers, all on loopback.
package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/test/framework"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

var sys *harness.System

// readOnlyToken is an access token bbsim accepts for reads and refuses (403) for writes.
const readOnlyToken = "read-only-token"

// The second repository of the default workspace.
const (
	secondRepositoryUUID = "{7d1c5e9a-3b2f-4c6d-8e0a-1f2b3c4d5e6f}"
	secondRepositorySlug = "tools"
)

// budgetToken is an access token of its own for the budget test, whose requests would
// otherwise eat into the hourly limit of the credential every other test shares.
const budgetToken = "budget-test-token"

// queueShareToken is the credential of the shared-read test alone, so that its count of queue
// reads is not mixed with reads of other tests' pools; bbsim names it "access-token:#2".
const (
	queueShareToken      = "queue-share-token"
	queueShareCredential = "access-token:#2"
)

// throttledToken is the credential the throttle test has bbsim answer 429 to; bbsim names it
// "access-token:#3".
const (
	throttledToken      = "throttled-token"
	throttledCredential = "access-token:#3"
)

// wakeBudgetToken is the credential whose budget the wake test spends.
const wakeBudgetToken = "wake-budget-token"

// operatorNamespace is where the in-process operator saves its request budgets.
const operatorNamespace = "runnerpool-system"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

// testLogger prints the operator's logs when E2E_VERBOSE=1.
func testLogger() logr.Logger {
	if os.Getenv("E2E_VERBOSE") == "1" {
		return funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{})
	}
	return logr.Discard()
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logger := testLogger()
	ctrllog.SetLogger(logger)
	var err error
	// The default workspace gets a second repository, for webhooks that concern one and not the other.
	workspaces := []bbsim.Workspace{{UUID: bbsim.DefaultWorkspaceUUID, Slug: bbsim.DefaultWorkspaceSlug, Repositories: []bbsim.Repository{
		{UUID: bbsim.DefaultRepositoryUUID, Slug: bbsim.DefaultRepositorySlug},
		{UUID: secondRepositoryUUID, Slug: secondRepositorySlug},
	}}}
	sys, err = harness.Start(ctx, harness.Options{
		Logger: logger,
		BBSim: bbsim.Options{
			Workspaces: workspaces, ConnectDelay: 500 * time.Millisecond,
			ReadOnlyTokens: []string{readOnlyToken}, AccessTokens: []string{budgetToken, queueShareToken, throttledToken, wakeBudgetToken},
		},
		BudgetNamespace: operatorNamespace,
	})
	if err != nil {
		if os.Getenv(framework.SkipEnv) == "1" {
			fmt.Fprintln(os.Stderr, "skipping e2e:", err)
			return 0
		}
		fmt.Fprintln(os.Stderr, "start local system:", err)
		return 1
	}
	defer sys.Stop()
	return m.Run()
}

// namespace creates a fresh namespace with a valid credentials Secret for one test.
func namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.Trim(name, "-")
	if err := sys.CreateNamespace(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	return name
}

// eventually polls cond until it holds or the timeout passes, then fails with the last reason.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	framework.Eventually(t, timeout, what, cond)
}

// bbRunners returns the simulator's runners whose name starts with prefix.
func bbRunners(prefix string) []bbsim.RunnerView {
	var out []bbsim.RunnerView
	for _, r := range sys.BBSim.State().Runners {
		if strings.HasPrefix(r.Name, prefix) {
			out = append(out, r)
		}
	}
	return out
}

func getPool(t *testing.T, ns, name string) *v1alpha1.RunnerPool {
	t.Helper()
	pool := &v1alpha1.RunnerPool{}
	if err := sys.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, pool); err != nil {
		t.Fatalf("get pool: %v", err)
	}
	return pool
}

func condition(pool *v1alpha1.RunnerPool, condType string) *metav1Condition {
	c := meta.FindStatusCondition(pool.Status.Conditions, condType)
	if c == nil {
		return nil
	}
	return &metav1Condition{Status: string(c.Status), Reason: c.Reason, Message: c.Message}
}

type metav1Condition struct{ Status, Reason, Message string }

// events returns the notes of events about an object, "reason: note".
func events(t *testing.T, ns, name string) []string {
	t.Helper()
	var list eventsv1.EventList
	if err := sys.Client.List(t.Context(), &list, client.InNamespace(ns)); err != nil {
		t.Fatalf("list events: %v", err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == name {
			out = append(out, e.Reason+": "+e.Note)
		}
	}
	return out
}

func countObjects(t *testing.T, ns string, list client.ObjectList, labels client.MatchingLabels) int {
	t.Helper()
	if err := sys.Client.List(t.Context(), list, client.InNamespace(ns), labels); err != nil {
		t.Fatalf("list: %v", err)
	}
	return meta.LenList(list)
}

func deleteAndWaitGone(t *testing.T, obj client.Object, timeout time.Duration) {
	t.Helper()
	if err := sys.Client.Delete(t.Context(), obj); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete %s: %v", obj.GetName(), err)
	}
	eventually(t, timeout, obj.GetName()+" to be gone", func() (bool, string) {
		err := sys.Client.Get(t.Context(), client.ObjectKeyFromObject(obj), obj)
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		return false, fmt.Sprintf("still there (finalizers %v, err %v)", obj.GetFinalizers(), err)
	})
}

// createPool creates the pool and returns it as the API server stored it (with its UID, which
// the pool's Bitbucket name prefix is made of).
func createPool(t *testing.T, pool *v1alpha1.RunnerPool) *v1alpha1.RunnerPool {
	t.Helper()
	if err := sys.Client.Create(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	return getPool(t, pool.Namespace, pool.Name)
}
