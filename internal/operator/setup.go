package operator

import (
	"context"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/credentials"
	"github.com/runnerpool/runnerpool-operator/internal/runnerlist"
	"github.com/runnerpool/runnerpool-operator/internal/stepqueue"
)

// setupControllers registers the RunnerPool and Runner reconcilers with the manager, with the
// services they share: one runner-list store (with the waker that turns a new list into Runner
// reconciles), one step-queue reader and one client cache.
func setupControllers(mgr ctrl.Manager, clients *credentials.Clients, concurrency int, timings controllers.Timings) error {
	if concurrency <= 0 {
		concurrency = 8
	}
	if err := runnerlist.IndexRunnerUUID(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return fmt.Errorf("index runners by uuid: %w", err)
	}
	store := runnerlist.NewStore(nil)
	waker := runnerlist.NewWaker(mgr.GetClient())
	store.OnRefresh = waker.OnRefresh

	queue := stepqueue.NewReader(mgr.GetClient())
	queue.Trust = clients
	pools := &controllers.RunnerPoolReconciler{
		Queue:    queue,
		Timings:  timings,
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("runnerpool-controller"),
		Clients:  clients,
		Store:    store,
	}
	if err := pools.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up runnerpool controller: %w", err)
	}
	runners := &controllers.RunnerReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("runner-controller"),
		Clients:   clients,
		Store:     store,
		Wake:      waker.Events,
		// Nodes are read directly, never cached: see RunnerReconciler.NodeReader.
		NodeReader: mgr.GetAPIReader(),
	}
	if err := runners.SetupWithManager(mgr, concurrency); err != nil {
		return fmt.Errorf("set up runner controller: %w", err)
	}
	return nil
}
