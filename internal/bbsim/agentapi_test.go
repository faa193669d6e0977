package bbsim

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// agentSession is a runner with a token of its own OAuth client, calling the
// agent API as the runner stand-in does.
type agentSession struct {
	e      *testEnv
	runner CreatedRunner
	token  string
}

func newAgentSession(t *testing.T, e *testEnv, req CreateRunnerRequest) *agentSession {
	t.Helper()
	if req.Labels == nil {
		req.Labels = []string{"self.hosted", "linux"}
	}
	r, err := e.sim.CreateRunner(req)
	if err != nil {
		t.Fatal(err)
	}
	return &agentSession{e: e, runner: r, token: e.runnerToken(r.ClientID, r.ClientSecret)}
}

// runnerToken asks the runner token endpoint for a token, failing the test
// unless it answers 200.
func (e *testEnv) runnerToken(clientID, secret string) string {
	e.t.Helper()
	resp := e.tokenRequest(clientID, secret)
	if resp.status != http.StatusOK {
		e.t.Fatalf("token: %d %s", resp.status, resp.body)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	resp.json(e.t, &tok)
	return tok.AccessToken
}

func (e *testEnv) tokenRequest(clientID, secret string) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.http.URL+runnerTokenPath,
		strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.SetBasicAuth(clientID, secret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return e.send(req)
}

func (a *agentSession) call(method, suffix string, body any) response {
	a.e.t.Helper()
	saved := a.e.token
	a.e.token = a.token
	defer func() { a.e.token = saved }()
	return a.e.do(method, "/_agent/v1/runners/"+strings.Trim(a.runner.UUID, "{}")+suffix, body)
}

func (a *agentSession) connect() response {
	a.e.t.Helper()
	return a.call(http.MethodPost, "/connect", AgentConnectRequest{AccountUUID: a.runner.Workspace, RepositoryUUID: a.runner.Repository})
}

func (a *agentSession) mustConnect() {
	a.e.t.Helper()
	if resp := a.connect(); resp.status != http.StatusOK {
		a.e.t.Fatalf("connect: %d %s", resp.status, resp.body)
	}
}

func (a *agentSession) status() string {
	a.e.t.Helper()
	for _, r := range a.e.sim.State().Runners {
		if r.UUID == a.runner.UUID {
			return r.Status
		}
	}
	a.e.t.Fatalf("runner %s gone", a.runner.UUID)
	return ""
}

func TestAgentRunsAStepAndReportsIt(t *testing.T) {
	e := newEnv(t, Options{})
	a := newAgentSession(t, e, CreateRunnerRequest{Name: "real"})
	if got := a.status(); got != StatusUnregistered {
		t.Fatalf("before connect: %s", got)
	}
	a.mustConnect()
	if got := a.status(); got != StatusOnline {
		t.Fatalf("after connect: %s", got)
	}
	if resp := a.call(http.MethodGet, "/step", nil); resp.status != http.StatusNoContent {
		t.Fatalf("idle runner's step: %d %s", resp.status, resp.body)
	}

	ids := e.enqueue(EnqueueRequest{
		Count: 1, Duration: time.Second, Script: "cat greeting", Image: "step:1",
		Files: map[string]string{"greeting": "hello"},
	})
	e.advance(0)
	resp := a.call(http.MethodGet, "/step", nil)
	if resp.status != http.StatusOK {
		t.Fatalf("step: %d %s", resp.status, resp.body)
	}
	var st AgentStep
	resp.json(t, &st)
	if st.UUID != ids[0] || st.Script != "cat greeting" || st.Image != "step:1" || st.Files["greeting"] != "hello" {
		t.Fatalf("step: %+v", st)
	}

	// The agent, not the clock, ends the step.
	a.call(http.MethodPost, "/heartbeat", struct{}{})
	e.advance(5 * time.Second)
	if got := e.step(ids[0]); got.Status != "running" {
		t.Fatalf("step ended without its agent: %+v", got)
	}
	resp = a.call(http.MethodPost, "/steps/"+strings.Trim(ids[0], "{}")+"/complete", AgentStepResult{Result: ResultFailed, ExitCode: 3, Log: "hello\n"})
	if resp.status != http.StatusNoContent {
		t.Fatalf("complete: %d %s", resp.status, resp.body)
	}
	got, err := e.sim.Step(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != "completed" || got.Result != ResultFailed || got.ExitCode == nil || *got.ExitCode != 3 || got.Log != "hello\n" {
		t.Fatalf("step after its report: %+v", got)
	}
	// A retried report is harmless.
	resp = a.call(http.MethodPost, "/steps/"+strings.Trim(ids[0], "{}")+"/complete", AgentStepResult{Result: ResultSuccessful})
	if resp.status != http.StatusNoContent {
		t.Fatalf("second report: %d %s", resp.status, resp.body)
	}
	if got, _ := e.sim.Step(ids[0]); got.Result != ResultFailed {
		t.Fatalf("a second report changed the step: %+v", got)
	}
	// The admin API shows the same.
	var view StepView
	e.do(http.MethodGet, "/_sim/steps/"+ids[0], nil).json(t, &view)
	if view.Log != "hello\n" || view.ExitCode == nil || *view.ExitCode != 3 {
		t.Fatalf("admin step: %+v", view)
	}
}

func TestAgentStepWithoutScriptSleepsItsDuration(t *testing.T) {
	e := newEnv(t, Options{})
	a := newAgentSession(t, e, CreateRunnerRequest{Name: "real"})
	a.mustConnect()
	e.enqueue(EnqueueRequest{Count: 1, Duration: 3 * time.Second})
	e.advance(0)
	var st AgentStep
	a.call(http.MethodGet, "/step", nil).json(t, &st)
	if st.Script != "sleep 3" || st.Image != "" {
		t.Fatalf("step: %+v", st)
	}
}

func TestAgentGoesOfflineWhenHeartbeatsStop(t *testing.T) {
	e := newEnv(t, Options{})
	a := newAgentSession(t, e, CreateRunnerRequest{Name: "real"})
	a.mustConnect()
	ids := e.enqueue(EnqueueRequest{Count: 1, Duration: time.Hour})
	e.advance(0)

	e.advance(agentHeartbeatInterval)
	a.call(http.MethodPost, "/heartbeat", struct{}{})
	e.advance(agentHeartbeatTimeout)
	if got := a.status(); got != StatusOnline {
		t.Fatalf("with heartbeats: %s", got)
	}
	e.advance(agentHeartbeatInterval)
	if got := a.status(); got != StatusOffline {
		t.Fatalf("without heartbeats: %s", got)
	}
	if got := e.step(ids[0]); got.Result != ResultError {
		t.Fatalf("the step of a runner gone offline: %+v", got)
	}
	// The agent must connect again.
	if resp := a.call(http.MethodPost, "/heartbeat", struct{}{}); resp.status != http.StatusConflict {
		t.Fatalf("heartbeat after going offline: %d %s", resp.status, resp.body)
	}
	a.mustConnect()
	if got := a.status(); got != StatusOnline {
		t.Fatalf("after reconnecting: %s", got)
	}
}

func TestAgentDisconnect(t *testing.T) {
	e := newEnv(t, Options{})
	a := newAgentSession(t, e, CreateRunnerRequest{Name: "real"})
	a.mustConnect()
	if resp := a.call(http.MethodPost, "/disconnect", struct{}{}); resp.status != http.StatusNoContent {
		t.Fatalf("disconnect: %d %s", resp.status, resp.body)
	}
	if got := a.status(); got != StatusOffline {
		t.Fatalf("after disconnect: %s", got)
	}
}

func TestAgentAPIRefusals(t *testing.T) {
	e := newEnv(t, Options{})
	a := newAgentSession(t, e, CreateRunnerRequest{Name: "a"})
	b := newAgentSession(t, e, CreateRunnerRequest{Name: "b"})
	held := newAgentSession(t, e, CreateRunnerRequest{Name: "held"})
	e.connect(held.runner.UUID) // an emulated agent holds it

	tests := []struct {
		name   string
		send   func() response
		status int
		issue  string // the runner's agent issue afterwards, if any
	}{
		{"token of another runner", func() response {
			s := *a
			s.runner.UUID = b.runner.UUID
			return s.connect()
		}, http.StatusForbidden, ""},
		{"the operator's token", func() response {
			s := *a
			s.token = testToken
			return s.connect()
		}, http.StatusUnauthorized, ""},
		{"no token", func() response {
			s := *a
			s.token = ""
			return s.connect()
		}, http.StatusUnauthorized, ""},
		{"wrong workspace", func() response {
			return a.call(http.MethodPost, "/connect", AgentConnectRequest{AccountUUID: "{99999999-8888-4777-8666-555555555555}"})
		}, http.StatusBadRequest, "is not the runner's workspace"},
		{"runner held by an emulated agent", held.connect, http.StatusConflict, "is already in use"},
		{"step before connecting", func() response { return b.call(http.MethodGet, "/step", nil) }, http.StatusConflict, ""},
		{"bad result", func() response {
			return b.call(http.MethodPost, "/steps/x/complete", AgentStepResult{Result: "GREAT"})
		}, http.StatusBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := tt.send()
			if resp.status != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.status, tt.status, resp.body)
			}
			if tt.issue == "" {
				return
			}
			found := false
			for _, r := range e.sim.State().Runners {
				found = found || strings.Contains(r.AgentIssue, tt.issue)
			}
			if !found {
				t.Fatalf("no runner has agent issue %q", tt.issue)
			}
		})
	}
	if resp := e.tokenRequest(a.runner.ClientID, "wrong"); resp.status != http.StatusUnauthorized {
		t.Fatalf("token with a wrong secret: %d %s", resp.status, resp.body)
	}
}
