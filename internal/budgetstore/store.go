// Package budgetstore keeps the Bitbucket request budgets in Leases of the operator's
// namespace, one per credential, so that a new leader (after a failover, a crash or an
// upgrade) resumes the last hour's count instead of starting at a full budget while
// Bitbucket's rolling window still holds every request (docs/adr/0009-request-budget-state.md).
package budgetstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

const (
	// LabelBudget marks the budget Leases, so one list finds them all.
	LabelBudget = "ci.runnerpool.dev/bitbucket-budget"
	// AnnotationState holds the encoded bitbucket.BudgetState.
	AnnotationState = "ci.runnerpool.dev/bitbucket-budget"
	// NamePrefix starts every budget Lease's name; the credential's budget key (a SHA-256, never
	// the secret) follows.
	NamePrefix = "runnerpool-budget-"

	// DefaultInterval is how often the leader saves budgets that changed: requests of the last
	// few seconds are all a crash can lose, at one write per busy credential per interval.
	DefaultInterval = 5 * time.Second
	// DefaultLoadTimeout bounds how long a new leader waits for the saved budgets before it
	// starts from empty ones (the old behaviour) rather than not at all.
	DefaultLoadTimeout = 30 * time.Second
	// maxRestored bounds how many saved budgets a load takes in: one per credential in use is
	// a few dozen; thousands of Leases were made by hand, and each would hold memory in the
	// registry until a client asked for it (never). The states themselves are clamped by
	// bitbucket.BudgetState.Clamp when restored.
	maxRestored = 1000
)

// Store loads the saved budgets into Registry when it starts and saves them every Interval.
// It is a manager Runnable that runs on the leader only. The manager holds Registry (see
// bitbucket.BudgetRegistry.Hold) until Store has loaded, so no Bitbucket call goes out before.
type Store struct {
	// Client must read from the API server, not a cache: the Leases live in a namespace the
	// manager's cache may not watch.
	Client    client.Client
	Namespace string
	Registry  *bitbucket.BudgetRegistry
	// Identity is written as the Lease holder: which replica saved it last.
	Identity    string
	Interval    time.Duration
	LoadTimeout time.Duration
	Logger      logr.Logger
	Now         func() time.Time

	leases  map[string]*coordinationv1.Lease // last seen, by budget key
	saved   map[string]uint64                // Budget.Version last saved, by budget key
	failing bool
}

// LeaseName is the name of the Lease of a budget key.
func LeaseName(key string) string { return NamePrefix + key }

// NeedLeaderElection is true: only the leader spends the budget, so only it saves it.
func (s *Store) NeedLeaderElection() bool { return true }

// Start loads, releases the registry, then saves every Interval until ctx ends, and once more
// after that (a graceful stop or a handover loses nothing).
func (s *Store) Start(ctx context.Context) error {
	s.defaults()
	s.load(ctx)
	s.Registry.Release()

	ticker := time.NewTicker(s.Interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
			s.Save(final)
			cancel()
			return nil
		case <-ticker.C:
			s.Save(ctx)
		}
	}
}

func (s *Store) defaults() {
	if s.Interval <= 0 {
		s.Interval = DefaultInterval
	}
	if s.LoadTimeout <= 0 {
		s.LoadTimeout = DefaultLoadTimeout
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Logger.GetSink() == nil {
		s.Logger = logr.Discard()
	}
	if s.leases == nil {
		s.leases = map[string]*coordinationv1.Lease{}
		s.saved = map[string]uint64{}
	}
}

// load restores every saved budget, retrying for LoadTimeout when the API server does not
// answer. Leases whose requests have all left the window are deleted on the way.
func (s *Store) load(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.LoadTimeout)
	defer cancel()
	delay := 250 * time.Millisecond
	for {
		err := s.loadOnce(ctx)
		if err == nil {
			return
		}
		if apierrors.IsForbidden(err) || ctx.Err() != nil {
			s.Logger.Error(err, "could not load the saved Bitbucket request budgets; starting from empty ones", "namespace", s.Namespace)
			return
		}
		s.Logger.V(1).Info("loading the saved Bitbucket request budgets failed; retrying", "error", err.Error(), "delay", delay)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func (s *Store) loadOnce(ctx context.Context) error {
	var list coordinationv1.LeaseList
	if err := s.Client.List(ctx, &list, client.InNamespace(s.Namespace), client.HasLabels{LabelBudget}); err != nil {
		return fmt.Errorf("list budget leases in %s: %w", s.Namespace, err)
	}
	now := s.Now()
	restored, skipped := 0, 0
	for i := range list.Items {
		lease := &list.Items[i]
		key, ok := strings.CutPrefix(lease.Name, NamePrefix)
		if !ok || key == "" {
			continue
		}
		state, err := bitbucket.ParseBudgetState(lease.Annotations[AnnotationState])
		if err != nil {
			// Overwritten at the next save; an unreadable record must not stop the operator.
			s.Logger.Error(err, "ignoring an unreadable saved request budget", "lease", lease.Name)
			s.leases[key] = lease
			continue
		}
		if state.Expired(now) {
			if err := s.Client.Delete(ctx, lease, client.Preconditions{ResourceVersion: &lease.ResourceVersion}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				s.Logger.V(1).Info("could not delete an expired budget lease", "lease", lease.Name, "error", err.Error())
			}
			continue
		}
		if restored >= maxRestored {
			skipped++
			continue
		}
		s.Registry.Restore(key, state)
		s.leases[key] = lease
		restored++
	}
	if skipped > 0 {
		s.Logger.Error(nil, "too many saved Bitbucket request budgets; ignoring the rest", "namespace", s.Namespace, "restored", restored, "ignored", skipped)
	}
	s.Logger.Info("restored the saved Bitbucket request budgets", "namespace", s.Namespace, "credentials", restored)
	return nil
}

// Save writes every budget that changed since it was last saved. Errors are logged (once per
// streak) and retried at the next call.
func (s *Store) Save(ctx context.Context) {
	s.defaults()
	var errs []error
	for key, b := range s.Registry.Budgets() {
		version := b.Version()
		if s.saved[key] == version {
			continue
		}
		state := b.State()
		if s.leases[key] == nil && state.Expired(s.Now()) {
			s.saved[key] = version // nothing worth a new object
			continue
		}
		if err := s.write(ctx, key, state); err != nil {
			errs = append(errs, err)
			continue
		}
		s.saved[key] = version
	}
	switch err := errors.Join(errs...); {
	case err != nil && !s.failing:
		s.failing = true
		s.Logger.Error(err, "could not save the Bitbucket request budgets; retrying", "namespace", s.Namespace)
	case err == nil && s.failing:
		s.failing = false
		s.Logger.Info("saving the Bitbucket request budgets again", "namespace", s.Namespace)
	}
}

func (s *Store) write(ctx context.Context, key string, state bitbucket.BudgetState) error {
	now := metav1.NewMicroTime(s.Now())
	holder := s.Identity
	if old := s.leases[key]; old != nil {
		lease := old.DeepCopy()
		if lease.Annotations == nil {
			lease.Annotations = map[string]string{}
		}
		lease.Annotations[AnnotationState] = state.String()
		lease.Spec.HolderIdentity, lease.Spec.RenewTime = &holder, &now
		err := s.Client.Update(ctx, lease)
		switch {
		case err == nil:
			s.leases[key] = lease
			return nil
		case apierrors.IsNotFound(err):
			delete(s.leases, key) // created again next time
		case apierrors.IsConflict(err):
			s.reread(ctx, key)
		}
		return fmt.Errorf("update budget lease %s: %w", lease.Name, err)
	}
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: LeaseName(key), Namespace: s.Namespace,
			Labels:      map[string]string{LabelBudget: "true", "app.kubernetes.io/managed-by": "runnerpool-operator"},
			Annotations: map[string]string{AnnotationState: state.String()},
		},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, RenewTime: &now},
	}
	err := s.Client.Create(ctx, lease)
	if err == nil {
		s.leases[key] = lease
		return nil
	}
	if apierrors.IsAlreadyExists(err) {
		s.reread(ctx, key)
	}
	return fmt.Errorf("create budget lease %s: %w", lease.Name, err)
}

// reread takes in a Lease written by someone else (a previous leader's last save racing this
// one): its requests are merged, never dropped, and the next save overwrites it.
func (s *Store) reread(ctx context.Context, key string) {
	var lease coordinationv1.Lease
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: LeaseName(key)}, &lease); err != nil {
		return
	}
	s.leases[key] = &lease
	if state, err := bitbucket.ParseBudgetState(lease.Annotations[AnnotationState]); err == nil {
		s.Registry.Restore(key, state)
	}
}
