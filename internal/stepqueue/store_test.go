package stepqueue

import (
	"context"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

// bbsim's endpoint names, as counted in State().Calls.
const (
	callPipelines = "GET /2.0/repositories/{ws}/{repo}/pipelines"
	callSteps     = "GET /2.0/repositories/{ws}/{repo}/pipelines/{pipeline}/steps"
	callFile      = "GET /2.0/repositories/{ws}/{repo}/src/{commit}/{path...}"
)

// hangGuard only keeps a broken test from hanging; nothing waits for it in a passing run.
const hangGuard = 10 * time.Second

var (
	t0          = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	dockerSteps = []string{"self.hosted", "linux", "docker"}
)

// simEnv is bbsim behind a real HTTP listener, the production client, and a
// store on a clock that moves only when told to.
type simEnv struct {
	t      *testing.T
	sim    *bbsim.Server
	client *bitbucket.Client
	clock  *clocktesting.FakeClock
	store  *Store
	key    RepoKey
}

func newSimEnv(t *testing.T, hourlyLimit int) *simEnv {
	t.Helper()
	sim := bbsim.New(bbsim.Options{})
	srv := httptest.NewServer(sim)
	t.Cleanup(func() {
		srv.Close()
		sim.Close()
	})
	if hourlyLimit == 0 {
		hourlyLimit = -1
	}
	client, err := bitbucket.New(bitbucket.Config{
		BaseURL:     srv.URL,
		TokenURL:    srv.URL + "/site/oauth2/access_token",
		Credentials: bitbucket.Credentials{OAuthClientID: bbsim.DefaultClientID, OAuthClientSecret: bbsim.DefaultClientSecret},
		Timeout:     5 * time.Second,
		MinBackoff:  time.Millisecond,
		MaxBackoff:  10 * time.Millisecond,
		HourlyLimit: hourlyLimit,
		Budgets:     bitbucket.NewBudgetRegistry(),
	})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	c := clocktesting.NewFakeClock(t0)
	return &simEnv{
		t: t, sim: sim, client: client, clock: c, store: NewStore(c.Now),
		key: RepoKey{APIURL: srv.URL, Workspace: bbsim.DefaultWorkspaceUUID, Repository: bbsim.DefaultRepositoryUUID},
	}
}

func (e *simEnv) enqueue(count, perPipeline int, runsOn []string) []string {
	e.t.Helper()
	ids, err := e.sim.Enqueue(bbsim.EnqueueRequest{Count: count, StepsPerPipeline: perPipeline, RunsOn: runsOn, Duration: time.Hour})
	if err != nil {
		e.t.Fatalf("enqueue: %v", err)
	}
	return ids
}

// waiting refreshes at the store's current time.
func (e *simEnv) waiting() []WaitingStep {
	e.t.Helper()
	steps, err := e.store.Waiting(context.Background(), e.client, e.key, e.clock.Now())
	if err != nil {
		e.t.Fatalf("Waiting: %v", err)
	}
	return steps
}

func (e *simEnv) calls() map[string]int { return e.sim.State().Calls }

// ids names waiting steps by their bbsim UUIDs: the step's own when the store read it, else the
// UUID of the step at its position in its pipeline (the steps of a PENDING pipeline come from its
// file, which has no UUIDs).
func (e *simEnv) ids(steps []WaitingStep) []string {
	e.t.Helper()
	byPipeline := map[string][]string{}
	for _, st := range e.sim.State().Steps {
		byPipeline[st.Pipeline] = append(byPipeline[st.Pipeline], st.UUID)
	}
	out := make([]string, 0, len(steps))
	for _, st := range steps {
		id := st.UUID
		if id == "" && st.Position < len(byPipeline[st.PipelineUUID]) {
			id = byPipeline[st.PipelineUUID][st.Position]
		}
		if st.UUID != "" && byPipeline[st.PipelineUUID][st.Position] != st.UUID {
			e.t.Errorf("step %s is at position %d of pipeline %s, where bbsim has %s", st.UUID, st.Position, st.PipelineUUID, byPipeline[st.PipelineUUID][st.Position])
		}
		out = append(out, id)
	}
	return out
}

func uuids(steps []WaitingStep) []string {
	out := make([]string, 0, len(steps))
	for _, st := range steps {
		out = append(out, st.UUID)
	}
	return out
}

func TestEnqueuedStepsAreWaitingWithTheirLabels(t *testing.T) {
	e := newSimEnv(t, 0)
	parallel := e.enqueue(3, 3, dockerSteps)
	single := e.enqueue(1, 1, []string{"self.hosted", "linux.arm64"})

	got := e.waiting()
	if want := append(slices.Clone(parallel), single...); !slices.Equal(e.ids(got), want) {
		t.Fatalf("waiting steps %v, want %v (oldest pipeline first, in pipeline order)", e.ids(got), want)
	}
	for i, st := range got {
		wantLabels, wantName := dockerSteps, []string{"Build 1", "Build 2", "Build 3", "Build 1"}[i]
		if i == 3 {
			wantLabels = []string{"self.hosted", "linux.arm64"}
		}
		if !slices.Equal(st.RunsOn, wantLabels) || st.Reason != "" {
			t.Errorf("step %d: runs-on %v (reason %q), want %v", i, st.RunsOn, st.Reason, wantLabels)
		}
		if st.Name != wantName || st.PipelineUUID == "" || st.BuildNumber == 0 {
			t.Errorf("step %d: name %q, pipeline %q #%d; want name %q and its pipeline", i, st.Name, st.PipelineUUID, st.BuildNumber, wantName)
		}
		if st.Workspace != e.key.Workspace || st.Repository != e.key.Repository || !st.FirstSeen.Equal(t0) {
			t.Errorf("step %d: %s/%s first seen %v; want the key's repository, first seen %v", i, st.Workspace, st.Repository, st.FirstSeen, t0)
		}
	}
}

func TestAStepPickedUpByARunnerLeavesTheList(t *testing.T) {
	e := newSimEnv(t, 0)
	ids := e.enqueue(2, 2, dockerSteps)
	if got := e.waiting(); len(got) != 2 {
		t.Fatalf("waiting steps %v, want both", e.ids(got))
	}

	ctx := context.Background()
	runner, err := e.client.CreateRunner(ctx, bitbucket.Scope{Workspace: bbsim.DefaultWorkspaceUUID}, "docker-1", dockerSteps)
	if err != nil {
		t.Fatalf("create runner: %v", err)
	}
	if err := e.sim.ConnectRunner(runner.UUID); err != nil {
		t.Fatalf("connect runner: %v", err)
	}
	e.clock.Step(30 * time.Second)

	got := e.waiting()
	if !slices.Equal(uuids(got), ids[1:]) {
		t.Fatalf("waiting steps %v, want only %v once the runner took the first", uuids(got), ids[1:])
	}
	if !got[0].FirstSeen.Equal(t0) {
		t.Errorf("first seen %v, want %v: the step was already waiting at the first reading", got[0].FirstSeen, t0)
	}
	calls := e.calls()
	if calls[callPipelines] != 2 || calls[callSteps] != 1 || calls[callFile] != 1 {
		t.Errorf("calls: pipelines %d, steps %d, file %d; want 2, 1, 1 (the PENDING pipeline's steps come from its file, read once; "+
			"they are read once it turns IN_PROGRESS with two steps)", calls[callPipelines], calls[callSteps], calls[callFile])
	}
}

// One refresh costs one pipelines list and one file read per commit not seen
// before; the steps of PENDING pipelines come from their files, however long
// they wait.
func TestRefreshCost(t *testing.T) {
	e := newSimEnv(t, 0)
	e.enqueue(3, 1, dockerSteps) // three pipelines, three commits

	e.waiting()
	assertCalls(t, e.calls(), 1, 0, 3)

	e.clock.Step(time.Minute)
	e.waiting()
	assertCalls(t, e.calls(), 2, 0, 3)

	e.enqueue(1, 1, dockerSteps)
	e.clock.Step(10 * StepsReuseTTL)
	if got := e.waiting(); len(got) != 4 {
		t.Fatalf("waiting steps %v, want 4", e.ids(got))
	}
	assertCalls(t, e.calls(), 3, 0, 4)

	// A reading at or after notBefore is served from the store.
	if _, err := e.store.Waiting(context.Background(), e.client, e.key, e.clock.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	assertCalls(t, e.calls(), 3, 0, 4)
}

func assertCalls(t *testing.T, calls map[string]int, pipelines, steps, files int) {
	t.Helper()
	if calls[callPipelines] != pipelines || calls[callSteps] != steps || calls[callFile] != files {
		t.Errorf("calls: pipelines %d, steps %d, file %d; want %d, %d, %d",
			calls[callPipelines], calls[callSteps], calls[callFile], pipelines, steps, files)
	}
}

func TestOnlyTheNewestRunningPipelinesAreRead(t *testing.T) {
	e := newSimEnv(t, 0)
	e.store.MaxPipelines = 2
	ids := e.enqueue(4, 1, dockerSteps)

	if got := e.waiting(); !slices.Equal(e.ids(got), ids[2:]) {
		t.Fatalf("waiting steps %v, want the two newest %v", e.ids(got), ids[2:])
	}
	assertCalls(t, e.calls(), 1, 0, 2)
}

// Steps that keep waiting keep the time they were first seen; a step seen
// again after it left is new.
func TestFirstSeenSurvivesRefreshes(t *testing.T) {
	e := newSimEnv(t, 0)
	first := e.enqueue(1, 1, dockerSteps)
	e.waiting()
	e.clock.Step(time.Minute)
	second := e.enqueue(1, 1, dockerSteps)

	got := e.waiting()
	if len(got) != 2 {
		t.Fatalf("waiting steps %v, want 2", e.ids(got))
	}
	ids := e.ids(got)
	seen := map[string]time.Time{ids[0]: got[0].FirstSeen, ids[1]: got[1].FirstSeen}
	if !seen[first[0]].Equal(t0) || !seen[second[0]].Equal(t0.Add(time.Minute)) {
		t.Errorf("first seen %v, want %s at %v and %s at %v", seen, first[0], t0, second[0], t0.Add(time.Minute))
	}
}

// gatedReader holds every pipelines list until the test opens the gate.
type gatedReader struct {
	bitbucket.QueueReader
	lists   atomic.Int32
	started chan struct{}
	gate    chan struct{}
}

func (g *gatedReader) ListPipelines(ctx context.Context, workspace, repo string, statuses ...string) ([]bitbucket.Pipeline, error) {
	g.lists.Add(1)
	g.started <- struct{}{}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.QueueReader.ListPipelines(ctx, workspace, repo, statuses...)
}

func TestConcurrentCallersShareOneRefresh(t *testing.T) {
	e := newSimEnv(t, 0)
	ids := e.enqueue(2, 2, dockerSteps)
	reader := &gatedReader{QueueReader: e.client, started: make(chan struct{}, 8), gate: make(chan struct{})}

	const callers = 5
	results := make(chan []WaitingStep, callers)
	errs := make(chan error, callers)
	call := func() {
		steps, err := e.store.Waiting(context.Background(), reader, e.key, e.clock.Now())
		results <- steps
		errs <- err
	}
	go call()
	select {
	case <-reader.started:
	case <-time.After(hangGuard):
		t.Fatal("no refresh started")
	}
	for range callers - 1 {
		go call()
	}
	waitFor(t, "every other caller to wait for the refresh in flight", func() bool {
		e.store.mu.Lock()
		defer e.store.mu.Unlock()
		c := e.store.entries[e.key].inflight
		return c != nil && c.waiters == callers-1
	})
	close(reader.gate)

	for range callers {
		if err := <-errs; err != nil {
			t.Fatalf("Waiting: %v", err)
		}
		if got := <-results; !slices.Equal(e.ids(got), ids) {
			t.Errorf("a caller got %v, want %v", e.ids(got), ids)
		}
	}
	if n := reader.lists.Load(); n != 1 {
		t.Errorf("%d pipelines lists, want 1 shared by %d callers", n, callers)
	}
	assertCalls(t, e.calls(), 1, 0, 1)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Queue reads must never eat the reserve that creates and deletes depend on,
// whatever priority the caller's context carries.
func TestReadsAreLowPriority(t *testing.T) {
	e := newSimEnv(t, 10) // 10 per hour, 1 held back for high priority
	e.enqueue(3, 1, dockerSteps)
	ctx := context.Background()
	for range 6 {
		if _, err := e.client.ListRunners(ctx, bitbucket.Scope{Workspace: bbsim.DefaultWorkspaceUUID}); err != nil {
			t.Fatal(err)
		}
	}
	// The refresh needs 4 requests (a list and three files): 6 + 4 fits the
	// budget but not the part of it that low priority may use.
	_, err := e.store.Waiting(bitbucket.WithPriority(ctx, bitbucket.PriorityHigh), e.client, e.key, e.clock.Now())
	if !bitbucket.IsBudgetExhausted(err) {
		t.Fatalf("Waiting = %v, want the budget refused as for low priority", err)
	}
	if _, _, ok := e.store.Peek(e.key); ok {
		t.Error("a failed refresh published a reading")
	}
}

// fakeReader serves fixed pipelines, steps and files, and counts calls.
type fakeReader struct {
	mu        sync.Mutex
	pipelines []bitbucket.Pipeline
	steps     map[string][]bitbucket.Step
	files     map[string]string // commit -> content; missing: 404
	listErr   error
	stepCalls int
	fileCalls int
}

func (f *fakeReader) ListPipelines(context.Context, string, string, ...string) ([]bitbucket.Pipeline, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.pipelines), f.listErr
}

func (f *fakeReader) ListSteps(_ context.Context, _, _, pipeline string) ([]bitbucket.Step, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stepCalls++
	steps, ok := f.steps[pipeline]
	if !ok {
		return nil, &bitbucket.APIError{StatusCode: 404, Message: "Pipeline not found"}
	}
	return steps, nil
}

func (f *fakeReader) GetFile(_ context.Context, _, _, commit, _ string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fileCalls++
	content, ok := f.files[commit]
	if !ok {
		return nil, &bitbucket.APIError{StatusCode: 404, Message: "No such file or directory"}
	}
	return []byte(content), nil
}

var (
	pendingStep = bitbucket.StepState{Name: bitbucket.StatePending}
	runningStep = bitbucket.StepState{Name: bitbucket.StateInProgress}
	pausedStage = &bitbucket.NamedState{Name: bitbucket.StagePaused}
)

func pipeline(uuid, commit string, created time.Time) bitbucket.Pipeline {
	return bitbucket.Pipeline{
		UUID: uuid, CreatedOn: created, State: bitbucket.PipelineState{Name: bitbucket.StateInProgress},
		Target: bitbucket.PipelineTarget{RefType: "branch", RefName: "main", Commit: commit, SelectorType: "default"},
	}
}

const twoStepYML = `
pipelines:
  default:
    - step: {name: Build, runs-on: [self.hosted, linux], script: [make]}
    - step: {name: Deploy, script: [make deploy]}
`

func TestWhatCannotBeReadIsReportedNotGuessed(t *testing.T) {
	f := &fakeReader{
		pipelines: []bitbucket.Pipeline{
			pipeline("{no-file}", "c0ffee1", t0),
			pipeline("{broken}", "badbad1", t0.Add(time.Second)),
			pipeline("{good}", "900d001", t0.Add(2*time.Second)),
			pipeline("{gone}", "900d001", t0.Add(3*time.Second)),
		},
		steps: map[string][]bitbucket.Step{
			"{no-file}": {{UUID: "a", Name: "Build", State: pendingStep}},
			"{broken}":  {{UUID: "b", Name: "Build", State: pendingStep}},
			"{good}": {
				{UUID: "c", Name: "Build", State: runningStep, StartedOn: t0},
				{UUID: "d", Name: "Deploy", State: pendingStep},
			},
		},
		files: map[string]string{"badbad1": "pipelines: [", "900d001": twoStepYML},
	}
	c := clocktesting.NewFakeClock(t0)
	store := NewStore(c.Now)
	k := RepoKey{APIURL: "http://127.0.0.1:1", Workspace: "{ws}", Repository: "{repo}"}

	for round := range 2 {
		got, err := store.Waiting(context.Background(), f, k, c.Now())
		if err != nil {
			t.Fatalf("Waiting: %v", err)
		}
		want := []struct {
			uuid   string
			runsOn []string
			reason string
		}{
			{"a", nil, "no bitbucket-pipelines.yml at commit c0ffee1"},
			{"b", nil, "bitbucket-pipelines.yml at commit badbad1: parse"},
			{"d", nil, ""}, // Deploy runs on Bitbucket's own runners
		}
		if len(got) != len(want) {
			t.Fatalf("waiting steps %v, want %d", uuids(got), len(want))
		}
		for i, w := range want {
			if got[i].UUID != w.uuid || !slices.Equal(got[i].RunsOn, w.runsOn) || !contains(got[i].Reason, w.reason) {
				t.Errorf("round %d, step %d: %s runs-on %v reason %q; want %s runs-on %v reason containing %q",
					round, i, got[i].UUID, got[i].RunsOn, got[i].Reason, w.uuid, w.runsOn, w.reason)
			}
		}
		c.Step(time.Minute)
	}
	if f.fileCalls != 3 {
		t.Errorf("%d file reads, want 3: a missing or broken file is as permanent as a good one", f.fileCalls)
	}
}

// contains is strings.Contains, except that an empty want means none.
func contains(s, sub string) bool {
	if sub == "" {
		return s == ""
	}
	return strings.Contains(s, sub)
}

func TestPausedPipelinesAndPipelinesWithoutWaitingStepsCostNoFileRead(t *testing.T) {
	paused := pipeline("{paused}", "aaaaaaa", t0)
	paused.State.Stage = pausedStage
	f := &fakeReader{
		pipelines: []bitbucket.Pipeline{paused, pipeline("{running}", "bbbbbbb", t0)},
		steps: map[string][]bitbucket.Step{
			"{paused}":  {{UUID: "manual", Name: "Deploy", State: bitbucket.StepState{Name: bitbucket.StatePending, Stage: pausedStage}}},
			"{running}": {{UUID: "busy", Name: "Build", State: runningStep, StartedOn: t0}},
		},
		files: map[string]string{},
	}
	store := NewStore(func() time.Time { return t0 })
	got, err := store.Waiting(context.Background(), f, RepoKey{Workspace: "ws", Repository: "repo"}, t0)
	if err != nil || len(got) != 0 {
		t.Fatalf("Waiting = %v, %v; want nothing waiting", uuids(got), err)
	}
	if f.stepCalls != 1 || f.fileCalls != 0 {
		t.Errorf("%d steps lists and %d file reads, want 1 (the paused pipeline is skipped) and 0", f.stepCalls, f.fileCalls)
	}
}

func TestAFailedRefreshKeepsTheLastReading(t *testing.T) {
	f := &fakeReader{
		pipelines: []bitbucket.Pipeline{pipeline("{p}", "c0c0c0c", t0)},
		steps:     map[string][]bitbucket.Step{"{p}": {{UUID: "s", Name: "Build", State: pendingStep}}},
		files:     map[string]string{"c0c0c0c": twoStepYML},
	}
	c := clocktesting.NewFakeClock(t0)
	store := NewStore(c.Now)
	k := RepoKey{Workspace: "ws", Repository: "repo"}
	if _, err := store.Waiting(context.Background(), f, k, c.Now()); err != nil {
		t.Fatal(err)
	}

	c.Step(time.Minute)
	outage := errors.New("bitbucket is down")
	f.mu.Lock()
	f.listErr = outage
	f.mu.Unlock()
	if _, err := store.Waiting(context.Background(), f, k, c.Now()); !errors.Is(err, outage) {
		t.Fatalf("Waiting = %v, want the list error", err)
	}
	steps, at, ok := store.Peek(k)
	if !ok || !at.Equal(t0) || len(steps) != 1 || !slices.Equal(steps[0].RunsOn, []string{"self.hosted", "linux"}) {
		t.Errorf("Peek = %v at %v (%v); want the reading of %v", steps, at, ok, t0)
	}
}

// A pipeline whose steps cannot have changed since the last refresh is not
// read again, but a step that starts is seen at the next refresh, whether or
// not its pipeline's state changes.
func TestStepsAreReadAgainOnlyWhenTheyMayHaveChanged(t *testing.T) {
	e := newSimEnv(t, 0)
	single := e.enqueue(2, 1, dockerSteps)     // two pipelines of one step
	sequential := e.enqueue(2, 2, dockerSteps) // one pipeline of two steps
	ctx := context.Background()
	connect := func(name string) {
		t.Helper()
		runner, err := e.client.CreateRunner(ctx, bitbucket.Scope{Workspace: bbsim.DefaultWorkspaceUUID}, name, dockerSteps)
		if err != nil {
			t.Fatalf("create runner: %v", err)
		}
		if err := e.sim.ConnectRunner(runner.UUID); err != nil {
			t.Fatalf("connect runner: %v", err)
		}
	}
	refresh := func(wantWaiting []string, wantSteps int, why string) {
		t.Helper()
		e.clock.Step(5 * time.Second)
		if got := e.waiting(); !slices.Equal(e.ids(got), wantWaiting) {
			t.Fatalf("%s: waiting steps %v, want %v", why, e.ids(got), wantWaiting)
		}
		if got := e.calls()[callSteps]; got != wantSteps {
			t.Errorf("%s: %d steps lists in all, want %d", why, got, wantSteps)
		}
	}
	all := append(slices.Clone(single), sequential...)

	refresh(all, 0, "first refresh: the PENDING pipelines' steps come from their files")
	refresh(all, 0, "nothing started: the PENDING pipelines are not read")

	connect("docker-1") // takes the oldest step, the only one of the first pipeline
	refresh(all[1:], 0, "the pipeline of one step turned IN_PROGRESS: its step started, no need to read it")
	refresh(all[1:], 0, "every step of that pipeline started: it is not read")

	connect("docker-2") // takes the second single step
	connect("docker-3") // takes the first step of the sequential pipeline
	refresh(sequential[1:], 1, "the pipeline of two steps turned IN_PROGRESS and is read")
	refresh(sequential[1:], 2, "a pipeline with a step still waiting is read at every refresh")

	connect("docker-4") // takes the last waiting step; its pipeline's state does not change
	refresh(nil, 3, "the step that started without its pipeline changing state is seen at once")
	refresh(nil, 3, "every step of every pipeline started: nothing is read again")

	e.clock.Step(StepsReuseTTL)
	refresh(nil, 6, "steps of running pipelines older than StepsReuseTTL are read again")
	if files := e.calls()[callFile]; files != 3 {
		t.Errorf("%d file reads, want 3: one per commit", files)
	}
}

// A running pipeline whose waiting steps no pool wants is not read again:
// whether they start changes no count.
func TestPipelinesWithoutWantedWaitingStepsAreNotReadAgain(t *testing.T) {
	const mixedYML = `
pipelines:
  default:
    - step: {name: Build, runs-on: [self.hosted, linux, docker], script: [make]}
    - step: {name: Test, runs-on: [self.hosted, linux, gpu], script: [make test]}
    - step: {name: Deploy, script: [make deploy]}
`
	steps := []bitbucket.Step{
		{UUID: "build", Name: "Build", State: runningStep, StartedOn: t0},
		{UUID: "test", Name: "Test", State: pendingStep},
		{UUID: "deploy", Name: "Deploy", State: pendingStep},
	}
	docker := func(runsOn []string) bool { return slices.Contains(runsOn, "docker") }
	gpu := func(runsOn []string) bool { return slices.Contains(runsOn, "gpu") }
	tests := []struct {
		name      string
		wanted    Wanted
		wantReads int
	}{
		{"no pool has the waiting step's labels", docker, 1},
		{"a pool has them", gpu, 3},
		{"any self-hosted step is wanted", nil, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeReader{
				pipelines: []bitbucket.Pipeline{pipeline("{p}", "abcdef1", t0)},
				steps:     map[string][]bitbucket.Step{"{p}": steps},
				files:     map[string]string{"abcdef1": mixedYML},
			}
			c := clocktesting.NewFakeClock(t0)
			store := NewStore(c.Now)
			k := RepoKey{Workspace: "ws", Repository: "repo"}
			for range 3 {
				got, err := store.WaitingFor(context.Background(), f, k, c.Now(), tt.wanted)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != 2 || got[0].UUID != "test" || got[1].UUID != "deploy" {
					t.Fatalf("waiting steps %v, want test and deploy, reported whoever wants them", uuids(got))
				}
				c.Step(10 * time.Second)
			}
			if f.stepCalls != tt.wantReads {
				t.Errorf("%d steps lists in 3 refreshes, want %d", f.stepCalls, tt.wantReads)
			}
		})
	}
}

// stepsPlan decides from the listing alone whether a pipeline's steps must be read.
func TestStepsPlan(t *testing.T) {
	pending := func() bitbucket.Pipeline {
		p := pipeline("{p}", "abcdef1", t0)
		p.BuildNumber, p.State = 7, bitbucket.PipelineState{Name: bitbucket.StatePending}
		return p
	}
	running := func() bitbucket.Pipeline {
		p := pending()
		p.State = bitbucket.PipelineState{Name: bitbucket.StateInProgress, Stage: &bitbucket.NamedState{Name: "RUNNING"}}
		return p
	}
	rerun := running()
	rerun.BuildNumber = 8
	waiting := bitbucket.Step{Name: "Build", State: pendingStep}
	started := bitbucket.Step{Name: "Build", State: runningStep, StartedOn: t0}
	selfHosted := []resolution{{runsOn: dockerSteps}}
	cloud := []resolution{{}}
	known := func(p bitbucket.Pipeline, labels []resolution, steps ...bitbucket.Step) readSteps {
		return readSteps{at: t0, pipeline: p, steps: steps, labels: labels}
	}
	tests := []struct {
		name  string
		prev  *readSteps
		now   bitbucket.Pipeline
		after time.Duration
		want  readPlan
	}{
		{"a new PENDING pipeline: its file", nil, pending(), 0, planFile},
		{"a new running pipeline: read", nil, running(), 0, planRead},
		{"still PENDING, however long after", ptr(known(pending(), selfHosted, waiting)), pending(), time.Hour, planKeep},
		{"PENDING with one step, now IN_PROGRESS: it started", ptr(known(pending(), selfHosted, waiting)), running(), 0, planStarted},
		{"PENDING with two steps, now IN_PROGRESS: read", ptr(known(pending(), nil, waiting, waiting)), running(), 0, planRead},
		{"running, a wanted step waits: read", ptr(known(running(), []resolution{{}, {runsOn: dockerSteps}}, started, waiting)), running(), time.Second, planRead},
		{"running, only a cloud step waits", ptr(known(running(), []resolution{{}, {}}, started, waiting)), running(), time.Second, planKeep},
		{"running, labels of a waiting step unknown: read", ptr(known(running(), nil, started, waiting)), running(), time.Second, planRead},
		{"running, every step started", ptr(known(running(), nil, started)), running(), time.Second, planKeep},
		{"running, every step started, past the reuse TTL: read", ptr(known(running(), nil, started)), running(), StepsReuseTTL, planRead},
		{"a new build number: read", ptr(known(running(), cloud, started)), rerun, time.Second, planRead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var prev readSteps
			if tt.prev != nil {
				prev = *tt.prev
			}
			if got := stepsPlan(prev, tt.prev != nil, tt.now, t0.Add(tt.after), nil); got != tt.want {
				t.Errorf("stepsPlan = %d, want %d", got, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
