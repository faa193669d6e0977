package controllers

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

// bbsim's names of the queue endpoints, as counted in State().Calls.
const (
	callPipelines = "GET /2.0/repositories/{ws}/{repo}/pipelines"
	callSteps     = "GET /2.0/repositories/{ws}/{repo}/pipelines/{pipeline}/steps"
)

// Two Queue pools reading one repository (spelt two ways) in the same round share one read,
// and each still gets only the steps its labels cover.
func TestPoolsReadingOneRepositoryShareOneQueueRead(t *testing.T) {
	sim := bbsim.New(bbsim.Options{HourlyLimit: -1})
	srv := httptest.NewServer(sim)
	t.Cleanup(func() {
		srv.Close()
		sim.Close()
	})
	api, err := bitbucket.New(bitbucket.Config{
		BaseURL:     srv.URL,
		TokenURL:    srv.URL + "/site/oauth2/access_token",
		Credentials: bitbucket.Credentials{OAuthClientID: bbsim.DefaultClientID, OAuthClientSecret: bbsim.DefaultClientSecret},
		Timeout:     5 * time.Second,
		HourlyLimit: -1,
		Budgets:     bitbucket.NewBudgetRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, labels := range [][]string{{"self.hosted", "linux", "docker"}, {"self.hosted", "linux", "gpu"}} {
		if _, err := sim.Enqueue(bbsim.EnqueueRequest{Count: 2, StepsPerPipeline: 2, RunsOn: labels, Duration: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}

	queuePool := func(name, label, repo string) *v1alpha1.RunnerPool {
		return testPool(poolNamed(name), func(p *v1alpha1.RunnerPool) {
			p.Spec.Bitbucket.Workspace = bbsim.DefaultWorkspaceUUID
			p.Spec.Labels = []v1alpha1.RunnerLabel{v1alpha1.RunnerLabel(label)}
		}, readingRepositories(repo))
	}
	docker := queuePool("docker", "docker", bbsim.DefaultRepositoryUUID)
	gpu := queuePool("gpu", "gpu", strings.ToUpper(strings.Trim(bbsim.DefaultRepositoryUUID, "{}")))
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects([]client.Object{docker, gpu}...).Build()
	q := NewQueueReader(reader)

	ctx := context.Background()
	round := func(want map[*v1alpha1.RunnerPool]int) {
		t.Helper()
		notBefore := time.Now() // the time a wake round wrote into both pools
		for pool, n := range want {
			got, err := q.Queued(ctx, pool, srv.URL, api, notBefore)
			if err != nil {
				t.Fatalf("Queued(%s): %v", pool.Name, err)
			}
			if got != n {
				t.Errorf("Queued(%s) = %d, want %d", pool.Name, got, n)
			}
		}
	}
	calls := func() (pipelines, steps int) {
		c := sim.State().Calls
		return c[callPipelines], c[callSteps]
	}

	round(map[*v1alpha1.RunnerPool]int{docker: 2, gpu: 2})
	if pipelines, steps := calls(); pipelines != 1 || steps != 2 {
		t.Errorf("first round: %d pipelines lists and %d steps lists, want 1 and 2 for both pools (2 and 4 read one by one)", pipelines, steps)
	}
	time.Sleep(2 * time.Millisecond) // the next round's time is after the first read
	round(map[*v1alpha1.RunnerPool]int{docker: 2, gpu: 2})
	if pipelines, steps := calls(); pipelines != 2 || steps != 2 {
		t.Errorf("second round: %d pipelines lists and %d steps lists in all, want 2 and 2: no step started, the pending pipelines are not read again", pipelines, steps)
	}
}
