package controllers

import (
	"context"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/runnerpool/runnerpool-operator/internal/observe"
)

// SetupOptions wires the controllers together.
type SetupOptions struct {
	Clients           *Clients
	Store             *observe.Store
	RunnerConcurrency int
	Timings           Timings
}

// Setup registers the RunnerPool and Runner controllers with the manager. The manager binary
// and the tests call it, so both run exactly the same wiring.
func Setup(mgr ctrl.Manager, opts SetupOptions) error {
	if opts.RunnerConcurrency <= 0 {
		opts.RunnerConcurrency = 8
	}
	if err := IndexRunnerUUID(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return fmt.Errorf("index runners by uuid: %w", err)
	}
	waker := NewRunnerWaker(mgr.GetClient())
	opts.Store.OnRefresh = waker.OnRefresh

	pools := &RunnerPoolReconciler{
		Queue:    NewQueueReader(mgr.GetClient()),
		Timings:  opts.Timings,
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("runnerpool-controller"),
		Clients:  opts.Clients,
		Store:    opts.Store,
	}
	if err := pools.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up runnerpool controller: %w", err)
	}
	runners := &RunnerReconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("runner-controller"),
		Clients:  opts.Clients,
		Store:    opts.Store,
		Wake:     waker.Events,
	}
	if err := runners.SetupWithManager(mgr, opts.RunnerConcurrency); err != nil {
		return fmt.Errorf("set up runner controller: %w", err)
	}
	return nil
}
