package bbsim

import (
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"
)

func TestAdminAPIDrivesTheSimulator(t *testing.T) {
	e := newEnv(t, Options{})
	e.token = "" // the admin API needs no credentials

	var created CreatedRunner
	resp := e.do(http.MethodPost, "/_sim/runners", CreateRunnerRequest{Name: "r", Labels: []string{"self.hosted", "linux"}})
	if resp.status != http.StatusOK {
		t.Fatalf("create runner: %d %s", resp.status, resp.body)
	}
	resp.json(t, &created)
	if created.ClientSecret == "" || created.Status != StatusUnregistered {
		t.Fatalf("created runner: %+v", created)
	}
	if resp := e.do(http.MethodPost, "/_sim/runners/"+url.PathEscape(created.UUID)+"/connect", nil); resp.status != http.StatusNoContent {
		t.Fatalf("connect: %d %s", resp.status, resp.body)
	}

	var enqueued struct {
		Steps []string `json:"steps"`
	}
	e.do(http.MethodPost, "/_sim/enqueue", map[string]any{"count": 2, "runs_on": []string{"self.hosted", "linux"}, "duration_seconds": 1.5}).json(t, &enqueued)
	if len(enqueued.Steps) != 2 {
		t.Fatalf("enqueue: %+v", enqueued)
	}

	var state struct {
		Runners []RunnerView `json:"runners"`
		Steps   []StepView   `json:"steps"`
		Queue   []string     `json:"queue"`
		Faults  faultsBody   `json:"faults"`
		NoMatch string       `json:"no_match"`
	}
	e.do(http.MethodGet, "/_sim/state", nil).json(t, &state)
	if len(state.Runners) != 1 || state.Runners[0].Step != enqueued.Steps[0] || len(state.Queue) != 1 || state.Steps[0].DurationSeconds != 1.5 {
		t.Fatalf("state: %+v", state)
	}

	if resp := e.do(http.MethodPut, "/_sim/faults", map[string]any{"error_rate": 0.25, "latency": "5ms", "seed": 7}); resp.status != http.StatusOK {
		t.Fatalf("faults: %d %s", resp.status, resp.body)
	}
	if f := e.sim.State().Faults; f.ErrorRate != 0.25 || f.Latency != 5*time.Millisecond || f.Seed != 7 {
		t.Fatalf("faults not applied: %+v", f)
	}
	if resp := e.do(http.MethodPut, "/_sim/config", map[string]any{"no_match": "fail", "hourly_limit": 5}); resp.status != http.StatusNoContent {
		t.Fatalf("config: %d %s", resp.status, resp.body)
	}
	if s := e.sim.State(); s.NoMatch != "fail" || s.HourlyLimit != 5 {
		t.Fatalf("config not applied: %s %d", s.NoMatch, s.HourlyLimit)
	}

	if resp := e.do(http.MethodPost, "/_sim/reset", nil); resp.status != http.StatusNoContent {
		t.Fatalf("reset: %d", resp.status)
	}
	after := e.sim.State()
	if len(after.Runners) != 0 || len(after.Steps) != 0 || after.NoMatch != "wait" || after.Faults.ErrorRate != 0 || len(after.Calls) != 0 {
		t.Fatalf("state after reset: %+v", after)
	}
}

func TestAdminAPIRejectsBadInput(t *testing.T) {
	e := newEnv(t, Options{})
	cases := []struct {
		name, method, path string
		body               any
		want               int
	}{
		{"unknown field", http.MethodPost, "/_sim/enqueue", map[string]any{"count": 1, "colour": "red"}, http.StatusBadRequest},
		{"zero count", http.MethodPost, "/_sim/enqueue", map[string]any{"count": 0}, http.StatusBadRequest},
		{"unknown runner", http.MethodPost, "/_sim/runners/nope/connect", nil, http.StatusNotFound},
		{"remote webhook", http.MethodPost, "/_sim/webhooks", WebhookTarget{URL: "https://example.com/hook"}, http.StatusBadRequest},
		{"rate above 1", http.MethodPut, "/_sim/faults", map[string]any{"error_rate": 2}, http.StatusBadRequest},
		{"4xx as server error", http.MethodPut, "/_sim/faults", map[string]any{"error_codes": []int{404}}, http.StatusBadRequest},
		{"unknown no-match mode", http.MethodPut, "/_sim/config", map[string]any{"no_match": "maybe"}, http.StatusBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if resp := e.do(tc.method, tc.path, tc.body); resp.status != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.status, tc.want, resp.body)
			}
		})
	}
}

func TestAdminUpdateRunnerRenamesAndRelabels(t *testing.T) {
	name := func(s string) *string { return &s }
	cases := []struct {
		name       string
		req        any
		wantStatus int
		wantName   string
		wantLabels []string
	}{
		{"rename only", UpdateRunnerRequest{Name: name("  renamed  ")}, http.StatusOK, "renamed", []string{"self.hosted", "linux", "gpu"}},
		{"relabel only", UpdateRunnerRequest{Labels: []string{"self.hosted", "linux", "other"}}, http.StatusOK, "r", []string{"self.hosted", "linux", "other"}},
		{"both", UpdateRunnerRequest{Name: name("x"), Labels: []string{"linux", "self.hosted"}}, http.StatusOK, "x", []string{"linux", "self.hosted"}},
		{"empty body changes nothing", map[string]any{}, http.StatusOK, "r", []string{"self.hosted", "linux", "gpu"}},
		{"blank name", UpdateRunnerRequest{Name: name(" ")}, http.StatusBadRequest, "r", []string{"self.hosted", "linux", "gpu"}},
		{"empty label set", map[string]any{"labels": []string{}}, http.StatusBadRequest, "r", []string{"self.hosted", "linux", "gpu"}},
		{"system label removed", UpdateRunnerRequest{Labels: []string{"linux", "gpu"}}, http.StatusBadRequest, "r", []string{"self.hosted", "linux", "gpu"}},
		{"upper-case label", UpdateRunnerRequest{Labels: []string{"self.hosted", "linux", "GPU"}}, http.StatusBadRequest, "r", []string{"self.hosted", "linux", "gpu"}},
		{"unknown field", map[string]any{"colour": "red"}, http.StatusBadRequest, "r", []string{"self.hosted", "linux", "gpu"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			r := e.createRunner(wsRunnersPath(DefaultWorkspaceUUID), "r", "self.hosted", "linux", "gpu")
			e.connect(r.UUID)
			before := e.runner(r.UUID)
			e.clock.Step(time.Minute)
			e.token = ""
			resp := e.do(http.MethodPatch, "/_sim/runners/"+url.PathEscape(r.UUID), tc.req)
			if resp.status != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.status, tc.wantStatus, resp.body)
			}
			e.token = testToken
			// The runners API shows the change; identity and state stay.
			var got runnerJSON
			e.do(http.MethodGet, wsRunnersPath(DefaultWorkspaceUUID)+"/"+r.UUID, nil).json(t, &got)
			if got.UUID != r.UUID || got.Name != tc.wantName || !slices.Equal(got.Labels, tc.wantLabels) || got.State.Status != StatusOnline {
				t.Fatalf("runner after update: %+v", got)
			}
			after := e.runner(r.UUID)
			if !after.UpdatedOn.Equal(before.UpdatedOn) {
				t.Fatalf("state.updated_on moved from %s to %s: the state did not change", before.UpdatedOn, after.UpdatedOn)
			}
		})
	}
}

func TestAdminUpdateRunnerUnknownRunnerIs404(t *testing.T) {
	e := newEnv(t, Options{})
	e.token = ""
	if resp := e.do(http.MethodPatch, "/_sim/runners/nope", UpdateRunnerRequest{Labels: []string{"self.hosted", "linux"}}); resp.status != http.StatusNotFound {
		t.Fatalf("status %d: %s", resp.status, resp.body)
	}
}

// A relabel is what scheduling sees next: the running step finishes on the runner, the next
// step for the old labels waits, and a step for the new labels starts at once.
func TestRelabelledRunnerGetsStepsOfItsNewLabels(t *testing.T) {
	e := newEnv(t, Options{})
	r := e.createRunner(wsRunnersPath(DefaultWorkspaceUUID), "r", "self.hosted", "linux", "pool.a")
	e.connect(r.UUID)
	running := e.enqueue(EnqueueRequest{Count: 1, RunsOn: []string{"self.hosted", "pool.a"}, Duration: time.Minute})
	if _, err := e.sim.UpdateRunner(r.UUID, UpdateRunnerRequest{Labels: []string{"self.hosted", "linux", "pool.b"}}); err != nil {
		t.Fatal(err)
	}
	if st := e.step(running[0]); st.Status != "running" || st.Runner != r.UUID {
		t.Fatalf("the running step was disturbed: %+v", st)
	}
	forA := e.enqueue(EnqueueRequest{Count: 1, RunsOn: []string{"self.hosted", "pool.a"}, Duration: time.Minute})
	forB := e.enqueue(EnqueueRequest{Count: 1, RunsOn: []string{"self.hosted", "pool.b"}, Duration: time.Minute})
	e.advance(time.Minute)
	if st := e.step(running[0]); st.Result != ResultSuccessful {
		t.Fatalf("running step: %+v", st)
	}
	if st := e.step(forA[0]); st.Status != "queued" {
		t.Fatalf("step for the old labels: %+v", st)
	}
	if st := e.step(forB[0]); st.Status != "running" || st.Runner != r.UUID {
		t.Fatalf("step for the new labels: %+v", st)
	}
}
