package stepqueue

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/fixture"
	"github.com/runnerpool/runnerpool-operator/internal/metrics"
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
		return fixture.Pool(fixture.PoolNamed(name), func(p *v1alpha1.RunnerPool) {
			p.Spec.Bitbucket.Workspace = bbsim.DefaultWorkspaceUUID
			p.Spec.Labels = []v1alpha1.RunnerLabel{v1alpha1.RunnerLabel(label)}
		}, fixture.ReadingRepositories(repo))
	}
	docker := queuePool("docker", "docker", bbsim.DefaultRepositoryUUID)
	gpu := queuePool("gpu", "gpu", strings.ToUpper(strings.Trim(bbsim.DefaultRepositoryUUID, "{}")))
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects([]client.Object{docker, gpu}...).Build()
	q := NewReader(reader)

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
	calls := func() (pipelines, files int) {
		c := sim.State().Calls
		return c[callPipelines], c[callFile]
	}

	round(map[*v1alpha1.RunnerPool]int{docker: 2, gpu: 2})
	if pipelines, files := calls(); pipelines != 1 || files != 2 {
		t.Errorf("first round: %d pipelines lists and %d file reads, want 1 and 2 for both pools (2 and 4 read one by one)", pipelines, files)
	}
	time.Sleep(2 * time.Millisecond) // the next round's time is after the first read
	round(map[*v1alpha1.RunnerPool]int{docker: 2, gpu: 2})
	if pipelines, files := calls(); pipelines != 2 || files != 2 {
		t.Errorf("second round: %d pipelines lists and %d file reads in all, want 2 and 2: no step started, each commit's file is read once", pipelines, files)
	}
	if steps := sim.State().Calls[callSteps]; steps != 0 {
		t.Errorf("%d steps lists, want 0: the steps of PENDING pipelines come from their files", steps)
	}
}

const (
	wsUUID = "{0b3f8a1e-2c4d-4e5f-8a9b-0c1d2e3f4a5b}"
	repoA  = "{aaaaaaaa-0000-4000-8000-000000000001}"
)

func TestKeySharesSpellingsOfOneRepository(t *testing.T) {
	a := Key("https://api", wsUUID, repoA)
	for _, spelling := range []string{"aaaaaaaa-0000-4000-8000-000000000001", "{AAAAAAAA-0000-4000-8000-000000000001}"} {
		if b := Key("https://api", "0B3F8A1E-2c4d-4e5f-8a9b-0c1d2e3f4a5b", spelling); b != a {
			t.Errorf("Key(%q) = %v, want %v", spelling, b, a)
		}
	}
	if slug := Key("https://api", wsUUID, "service-a"); slug.Repository != "service-a" {
		t.Errorf("a slug became %q, want it unchanged", slug.Repository)
	}
}

// A step that left the queue between two reads of its pool has its wait recorded only when the
// reads are at most two poll intervals apart: after a longer gap, when it started is not known.
func TestStepWaitsAreRecordedOnlyBetweenCloseReads(t *testing.T) {
	tests := []struct {
		name      string
		lastRead  time.Duration // before now
		wantWaits uint64
	}{
		{"the previous read a poll ago", 15 * time.Second, 1},
		{"the previous read two polls ago", 29 * time.Second, 1},
		{"the previous read long ago", 10 * time.Minute, 0},
		{"no previous read", 0, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := fixture.Pool(fixture.PoolNamed(fmt.Sprintf("waits-%d", i)))
			q := NewReader(nil)
			step := WaitingStep{PipelineUUID: "{p}", Position: 0, FirstSeen: time.Now().Add(-time.Hour)}
			if tt.lastRead > 0 {
				q.waiting[client.ObjectKeyFromObject(pool)] = poolWaits{
					at: time.Now().Add(-tt.lastRead), steps: map[string]time.Time{step.ID(): step.FirstSeen},
				}
			}
			waits := func() uint64 {
				var m dto.Metric
				if err := metrics.StepWaitSeconds.WithLabelValues(pool.Namespace, pool.Name).(prometheus.Histogram).Write(&m); err != nil {
					t.Fatal(err)
				}
				return m.GetHistogram().GetSampleCount()
			}
			before := waits()
			q.observeWaits(pool, nil) // the step has left the queue
			if got := waits() - before; got != tt.wantWaits {
				t.Errorf("%d waits recorded, want %d", got, tt.wantWaits)
			}
		})
	}
}

// fakeTrust proves the pools it names; Prove records what the reader proved.
type fakeTrust struct {
	proven map[string]bool // pool name -> its credential listed its scope
	proofs map[string]bool
}

func (f *fakeTrust) Credential(p *v1alpha1.RunnerPool) string { return "cred-" + p.Name }
func (f *fakeTrust) PoolProven(p *v1alpha1.RunnerPool) bool   { return f.proven[p.Name] }
func (f *fakeTrust) Proven(c, s string) bool                  { return f.proofs[c+" "+s] }
func (f *fakeTrust) Prove(c, s string)                        { f.proofs[c+" "+s] = true }

// A pool whose credentials never worked reads no queue and is given no step, even with labels
// that cover every waiting step; a proven pool's first read of a repository is its own, and
// proves it there.
func TestStepsGoOnlyToPoolsWhoseCredentialsWorked(t *testing.T) {
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
	if _, err := sim.Enqueue(bbsim.EnqueueRequest{Count: 4, RunsOn: []string{"self.hosted", "linux", "docker"}, Duration: time.Hour}); err != nil {
		t.Fatal(err)
	}
	queuePool := func(name string) *v1alpha1.RunnerPool {
		return fixture.Pool(fixture.PoolNamed(name), func(p *v1alpha1.RunnerPool) {
			p.Spec.Bitbucket.Workspace = bbsim.DefaultWorkspaceUUID
			p.Spec.Labels = []v1alpha1.RunnerLabel{"docker"}
		}, fixture.ReadingRepositories(bbsim.DefaultRepositoryUUID))
	}
	good, bad := queuePool("good"), queuePool("bad")
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	q := NewReader(fake.NewClientBuilder().WithScheme(scheme).WithObjects(good, bad).Build())
	trust := &fakeTrust{proven: map[string]bool{"good": true}, proofs: map[string]bool{}}
	q.Trust = trust
	ctx := context.Background()

	if n, err := q.Queued(ctx, bad, srv.URL, api, time.Now()); err == nil || n != 0 {
		t.Errorf("Queued(bad) = %d, %v; want nothing and an error", n, err)
	}
	n, err := q.Queued(ctx, good, srv.URL, api, time.Now())
	if err != nil || n != 4 {
		t.Errorf("Queued(good) = %d, %v; want all 4 steps: the bad pool takes none", n, err)
	}
	scope := "pipelines " + Key(srv.URL, bbsim.DefaultWorkspaceUUID, bbsim.DefaultRepositoryUUID).String()
	if !trust.proofs["cred-good "+scope] {
		t.Errorf("the good credential's own read did not prove it on the repository: %v", trust.proofs)
	}
}
