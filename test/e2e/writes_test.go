package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// maxWritesToIdle is what a new Runner may cost in writes of its own object, from its creation
// to Idle, on a machine slow enough that its agent connects more than 15 s after its
// registration: one status patch for its registration and pod, one when the pod is ready, one
// when Bitbucket shows it ONLINE. Connected in time, all of it is one patch (ADR 0019). Its
// finalizer comes with the create.
const maxWritesToIdle = 3

func TestANewRunnerIsWrittenOncePerStepOfItsStart(t *testing.T) {
	ns := namespace(t)
	wc, err := client.NewWithWatch(sys.ControlPlane.Config, client.Options{Scheme: sys.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(t.Context(), &v1alpha1.RunnerList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	createPool(t, harness.Pool(ns, "writes", 2, 2))

	// Every version of every Runner the API server stores, as the watch delivers them.
	versions := map[string][]*v1alpha1.Runner{}
	idle := map[string]bool{}
	deadline := time.After(60 * time.Second)
	for len(idle) < 2 {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("the watch ended")
			}
			runner, isRunner := ev.Object.(*v1alpha1.Runner)
			if !isRunner || (ev.Type != watch.Added && ev.Type != watch.Modified) {
				continue
			}
			if !idle[runner.Name] {
				versions[runner.Name] = append(versions[runner.Name], runner)
			}
			if runner.Status.Phase == v1alpha1.RunnerPhaseIdle {
				idle[runner.Name] = true
			}
		case <-deadline:
			t.Fatalf("2 Runners Idle within 60 s; seen %s", phases(versions))
		}
	}
	for name, vs := range versions {
		if !controllerutil.ContainsFinalizer(vs[0], v1alpha1.RunnerFinalizer) {
			t.Errorf("Runner %s was created without its finalizer %s: adding it costs a write", name, v1alpha1.RunnerFinalizer)
		}
		// A reconcile working from a copy older than its own last write would take the runner
		// for one a crash left behind.
		for _, e := range events(t, ns, name) {
			if strings.HasPrefix(e, "Adopted") {
				t.Errorf("Runner %s was adopted although the operator never stopped: %s", name, e)
			}
		}
		if writes := len(vs) - 1; writes > maxWritesToIdle {
			t.Errorf("Runner %s was written %d times between its creation and Idle, want at most %d: %s", name, writes, maxWritesToIdle, phases(map[string][]*v1alpha1.Runner{name: vs}))
		}
	}
}

// phases describes each Runner's stored versions by phase and conditions, for failure messages.
func phases(versions map[string][]*v1alpha1.Runner) string {
	out := ""
	for name, vs := range versions {
		out += name + ":"
		for _, v := range vs {
			out += " " + string(v.Status.Phase)
			for _, c := range v.Status.Conditions {
				out += fmt.Sprintf("/%s=%s", c.Type, c.Status)
			}
		}
		out += "; "
	}
	return out
}
