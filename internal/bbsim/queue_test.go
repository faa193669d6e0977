package bbsim

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

const (
	libRepoUUID   = "{11111111-2222-4333-8444-555555555555}"
	otherWSUUID   = "{99999999-8888-4777-8666-555555555555}"
	otherRepoUUID = "{aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee}"
)

func TestStepAssignment(t *testing.T) {
	type runnerSpec struct {
		name      string
		ws, repo  string // repo "" = workspace runner
		labels    []string
		connected bool
		disabled  bool
	}
	type stepSpec struct {
		repo   string
		runsOn []string
	}
	linux := []string{"self.hosted", "linux"}
	gpu := []string{"self.hosted", "linux", "gpu"}
	cases := []struct {
		name    string
		runners []runnerSpec
		steps   []stepSpec
		want    []string // runner name per step, "" = still queued
	}{
		{
			name:    "runner whose labels include all runs-on labels takes the step",
			runners: []runnerSpec{{name: "g", labels: gpu, connected: true}},
			steps:   []stepSpec{{runsOn: []string{"self.hosted", "gpu"}}},
			want:    []string{"g"},
		},
		{
			name:    "runner missing one label does not",
			runners: []runnerSpec{{name: "l", labels: linux, connected: true}},
			steps:   []stepSpec{{runsOn: gpu}},
			want:    []string{""},
		},
		{
			name:    "runner that never connected takes nothing",
			runners: []runnerSpec{{name: "l", labels: linux}},
			steps:   []stepSpec{{runsOn: linux}},
			want:    []string{""},
		},
		{
			name:    "disabled runner takes nothing",
			runners: []runnerSpec{{name: "l", labels: linux, connected: true, disabled: true}},
			steps:   []stepSpec{{runsOn: linux}},
			want:    []string{""},
		},
		{
			name:    "one step per runner",
			runners: []runnerSpec{{name: "l", labels: linux, connected: true}},
			steps:   []stepSpec{{runsOn: linux}, {runsOn: linux}},
			want:    []string{"l", ""},
		},
		{
			name: "repository runner serves only its repository",
			runners: []runnerSpec{
				{name: "app-runner", repo: DefaultRepositoryUUID, labels: linux, connected: true},
			},
			steps: []stepSpec{{repo: "lib", runsOn: linux}, {repo: "app", runsOn: linux}},
			want:  []string{"", "app-runner"},
		},
		{
			name:    "workspace runner serves every repository of its workspace",
			runners: []runnerSpec{{name: "ws", labels: linux, connected: true}},
			steps:   []stepSpec{{repo: "lib", runsOn: linux}},
			want:    []string{"ws"},
		},
		{
			name:    "runner of another workspace does not",
			runners: []runnerSpec{{name: "elsewhere", ws: otherWSUUID, labels: linux, connected: true}},
			steps:   []stepSpec{{runsOn: linux}},
			want:    []string{""},
		},
		{
			name: "a step waiting for a label does not block later steps",
			runners: []runnerSpec{
				{name: "l", labels: linux, connected: true},
			},
			steps: []stepSpec{{runsOn: gpu}, {runsOn: linux}},
			want:  []string{"", "l"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			byUUID := map[string]string{}
			for _, rs := range tc.runners {
				ws := rs.ws
				if ws == "" {
					ws = DefaultWorkspaceUUID
				}
				path := wsRunnersPath(ws)
				if rs.repo != "" {
					path = repoRunnersPath(ws, rs.repo)
				}
				r := e.createRunner(path, rs.name, rs.labels...)
				byUUID[r.UUID] = rs.name
				if rs.connected {
					e.connect(r.UUID)
				}
				if rs.disabled {
					e.sim.mu.Lock()
					e.sim.runners[r.UUID].disabled = true
					e.sim.mu.Unlock()
				}
			}
			var ids []string
			for _, ss := range tc.steps {
				ids = append(ids, e.enqueue(EnqueueRequest{Count: 1, RunsOn: ss.runsOn, Duration: time.Minute, Repository: ss.repo})...)
			}
			for i, id := range ids {
				got := byUUID[e.step(id).Runner]
				if got != tc.want[i] {
					t.Errorf("step %d ran on %q, want %q", i, got, tc.want[i])
				}
			}
		})
	}
}

func TestStepsRunFIFOAndCompleteAfterTheirDuration(t *testing.T) {
	e := newEnv(t, Options{})
	r := e.createRunner(wsRunnersPath(DefaultWorkspaceUUID), "only")
	e.connect(r.UUID)
	var ids []string
	for range 3 {
		ids = append(ids, e.enqueue(EnqueueRequest{Count: 1, Duration: 10 * time.Second})...)
		e.clock.Step(time.Millisecond) // distinct enqueue times
	}
	started := e.clock.Now()
	if st := e.step(ids[0]); st.Status != "running" || st.Runner != r.UUID {
		t.Fatalf("first step: %+v", st)
	}

	e.advance(10*time.Second - 10*time.Millisecond)
	if st := e.step(ids[0]); st.Status != "running" {
		t.Fatalf("first step finished before its duration: %+v", st)
	}
	e.advance(10 * time.Millisecond)
	first := e.step(ids[0])
	if first.Status != "completed" || first.Result != ResultSuccessful {
		t.Fatalf("first step after its duration: %+v", first)
	}
	if got := first.CompletedAt.Sub(*first.StartedAt); got != 10*time.Second {
		t.Errorf("first step ran %s, want 10s", got)
	}
	if first.StartedAt.Before(first.EnqueuedAt) || first.EnqueuedAt.After(started) {
		t.Errorf("timestamps out of order: %+v", first)
	}
	if second, third := e.step(ids[1]), e.step(ids[2]); second.Status != "running" || third.Status != "queued" {
		t.Fatalf("FIFO broken: second %s, third %s", second.Status, third.Status)
	}
	e.advance(10 * time.Second)
	e.advance(10 * time.Second)
	if got := e.runner(r.UUID).StepsCompleted; got != 3 {
		t.Errorf("steps completed = %d, want 3", got)
	}
	if q := e.sim.State().Queue; len(q) != 0 {
		t.Errorf("queue not empty: %v", q)
	}
}

func TestDisabledRunnerFinishesItsStepButTakesNoNewOne(t *testing.T) {
	e := newEnv(t, Options{})
	r := e.createRunner(wsRunnersPath(DefaultWorkspaceUUID), "r")
	e.connect(r.UUID)
	ids := e.enqueue(EnqueueRequest{Count: 2, Duration: 10 * time.Second})
	statePath := wsRunnersPath(DefaultWorkspaceUUID) + "/" + r.UUID + "/state"

	if resp := e.do(http.MethodPut, statePath, runnerStateBody{Status: StatusDisabled}); resp.status != http.StatusOK {
		t.Fatalf("disable: %d %s", resp.status, resp.body)
	}
	e.advance(5 * time.Second)
	if st := e.step(ids[0]); st.Status != "running" {
		t.Fatalf("disabling stopped the running step: %+v", st)
	}
	e.advance(5 * time.Second)
	if st := e.step(ids[0]); st.Result != ResultSuccessful {
		t.Fatalf("running step did not complete: %+v", st)
	}
	e.advance(time.Second)
	if st := e.step(ids[1]); st.Status != "queued" {
		t.Fatalf("disabled runner took a new step: %+v", st)
	}

	if resp := e.do(http.MethodPut, statePath, runnerStateBody{Status: StatusEnabled}); resp.status != http.StatusOK {
		t.Fatalf("enable: %d %s", resp.status, resp.body)
	}
	if st := e.step(ids[1]); st.Status != "running" {
		t.Fatalf("re-enabled runner did not take the step at once: %+v", st)
	}
}

func TestRunnerLostMidStepFailsTheStep(t *testing.T) {
	cases := []struct {
		name       string
		lose       func(e *testEnv, runnerUUID string)
		wantReason string
	}{
		{
			name: "deleted",
			lose: func(e *testEnv, id string) {
				if resp := e.do(http.MethodDelete, wsRunnersPath(DefaultWorkspaceUUID)+"/"+id, nil); resp.status != http.StatusNoContent {
					e.t.Fatalf("delete: %d %s", resp.status, resp.body)
				}
			},
			wantReason: "deleted",
		},
		{
			name: "went offline",
			lose: func(e *testEnv, id string) {
				if err := e.sim.DisconnectRunner(id); err != nil {
					e.t.Fatal(err)
				}
			},
			wantReason: "offline",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			r := e.createRunner(wsRunnersPath(DefaultWorkspaceUUID), "r")
			e.connect(r.UUID)
			ids := e.enqueue(EnqueueRequest{Count: 1, Duration: time.Minute})
			e.advance(time.Second)
			tc.lose(e, r.UUID)
			st := e.step(ids[0])
			if st.Status != "completed" || st.Result != ResultError || !strings.Contains(st.Reason, tc.wantReason) {
				t.Fatalf("step after runner %s: %+v", tc.name, st)
			}
			if st.CompletedAt == nil || st.Runner != r.UUID {
				t.Fatalf("step does not record where and when it ended: %+v", st)
			}
		})
	}
}

func TestNoMatchingOnlineRunner(t *testing.T) {
	cases := []struct {
		name       string
		noMatch    string
		setup      func(e *testEnv)
		wantStatus string
		wantResult string
	}{
		{name: "wait keeps the step queued", noMatch: "wait", wantStatus: "queued"},
		{name: "default is wait", noMatch: "", wantStatus: "queued"},
		{name: "fail fails it at once", noMatch: "fail", wantStatus: "completed", wantResult: ResultFailed},
		{
			name: "fail: a registered but offline runner does not count", noMatch: "fail",
			setup: func(e *testEnv) {
				r := e.createRunner(wsRunnersPath(DefaultWorkspaceUUID), "r")
				e.connect(r.UUID)
				if err := e.sim.DisconnectRunner(r.UUID); err != nil {
					e.t.Fatal(err)
				}
			},
			wantStatus: "completed", wantResult: ResultFailed,
		},
		{
			name: "fail: a busy matching runner makes the step wait", noMatch: "fail",
			setup: func(e *testEnv) {
				r := e.createRunner(wsRunnersPath(DefaultWorkspaceUUID), "r")
				e.connect(r.UUID)
				e.enqueue(EnqueueRequest{Count: 1, Duration: time.Hour})
			},
			wantStatus: "queued",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{NoMatch: tc.noMatch})
			if tc.setup != nil {
				tc.setup(e)
			}
			ids := e.enqueue(EnqueueRequest{Count: 1, Duration: time.Minute})
			st := e.step(ids[0])
			if st.Status != tc.wantStatus || st.Result != tc.wantResult {
				t.Fatalf("got %s/%s, want %s/%s", st.Status, st.Result, tc.wantStatus, tc.wantResult)
			}
			if tc.wantResult == ResultFailed && st.Reason != ReasonNoMatch {
				t.Errorf("reason %q, want %q", st.Reason, ReasonNoMatch)
			}
		})
	}
}

func TestWaitingStepStartsWhenARunnerComesOnline(t *testing.T) {
	e := newEnv(t, Options{})
	ids := e.enqueue(EnqueueRequest{Count: 1, Duration: time.Minute})
	r := e.createRunner(wsRunnersPath(DefaultWorkspaceUUID), "late")
	e.connect(r.UUID)
	if st := e.step(ids[0]); st.Status != "running" || st.Runner != r.UUID {
		t.Fatalf("step did not start when the runner connected: %+v", st)
	}
}

func TestEnqueueRejectsBadRequests(t *testing.T) {
	e := newEnv(t, Options{})
	cases := []EnqueueRequest{
		{Count: 0},
		{Count: 1, RunsOn: []string{"Self.Hosted"}},
		{Count: 1, Repository: "missing"},
		{Count: 1, Workspace: "missing"},
		{Count: 1, Duration: -time.Second},
	}
	for _, req := range cases {
		if _, err := e.sim.Enqueue(req); err == nil {
			t.Errorf("Enqueue(%+v) succeeded", req)
		}
	}
}
