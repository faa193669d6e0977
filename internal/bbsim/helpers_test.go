package bbsim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

const testToken = "test-access-token"

// newFakeClock is a clock that moves only when told to.
func newFakeClock() *clocktesting.FakeClock {
	return clocktesting.NewFakeClock(time.Date(2025, 3, 14, 9, 26, 53, 589793000, time.UTC))
}

// testEnv is a simulator behind a real HTTP listener with a fake clock.
type testEnv struct {
	t     *testing.T
	sim   *Server
	http  *httptest.Server
	clock *clocktesting.FakeClock
	token string // Authorization: Bearer value used by do; "" sends none
}

// twoWorkspaces is the world most tests use: workspace demo with repositories
// app and lib, and a second workspace other with repository x.
var twoWorkspaces = []Workspace{
	{UUID: DefaultWorkspaceUUID, Slug: "demo", Repositories: []Repository{
		{UUID: DefaultRepositoryUUID, Slug: "app"},
		{UUID: "{11111111-2222-4333-8444-555555555555}", Slug: "lib"},
	}},
	{UUID: "{99999999-8888-4777-8666-555555555555}", Slug: "other", Repositories: []Repository{
		{UUID: "{aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee}", Slug: "x"},
	}},
}

func newEnv(t *testing.T, opts Options) *testEnv {
	t.Helper()
	clock := newFakeClock()
	if opts.Now == nil {
		opts.Now = clock.Now
	}
	if opts.Workspaces == nil {
		opts.Workspaces = twoWorkspaces
	}
	opts.AccessTokens = append([]string{testToken}, opts.AccessTokens...)
	sim := New(opts)
	srv := httptest.NewServer(sim)
	t.Cleanup(func() {
		srv.Close()
		sim.Close()
	})
	return &testEnv{t: t, sim: sim, http: srv, clock: clock, token: testToken}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, into any) {
	t.Helper()
	if err := json.Unmarshal(r.body, into); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// errorMessage returns error.message of a Bitbucket error envelope.
func (r response) errorMessage(t *testing.T) string {
	t.Helper()
	var env struct {
		Type  string `json:"type"`
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	r.json(t, &env)
	if env.Type != "error" {
		t.Fatalf("body %s is not an error envelope", r.body)
	}
	return env.Error.Message
}

func (e *testEnv) do(method, path string, body any) response {
	e.t.Helper()
	return e.doURL(method, e.http.URL+path, body)
}

func (e *testEnv) doURL(method, url string, body any) response {
	e.t.Helper()
	var reader io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			e.t.Fatalf("encode body: %v", err)
		}
		reader = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, reader)
	if err != nil {
		e.t.Fatalf("build request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	return e.send(req)
}

func (e *testEnv) send(req *http.Request) response {
	e.t.Helper()
	resp, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: raw}
}

func wsRunnersPath(ws string) string {
	return "/internal/workspaces/" + ws + "/pipelines-config/runners"
}

func repoRunnersPath(ws, repo string) string {
	return "/internal/repositories/" + ws + "/" + repo + "/pipelines-config/runners"
}

// createRunner creates a runner through the HTTP API and returns its JSON.
func (e *testEnv) createRunner(scopePath, name string, labels ...string) runnerJSON {
	e.t.Helper()
	if len(labels) == 0 {
		labels = []string{"self.hosted", "linux"}
	}
	resp := e.do(http.MethodPost, scopePath, createRunnerBody{Name: name, Labels: labels})
	if resp.status != http.StatusOK {
		e.t.Fatalf("create runner %s: status %d: %s", name, resp.status, resp.body)
	}
	var out runnerJSON
	resp.json(e.t, &out)
	return out
}

func (e *testEnv) enqueue(req EnqueueRequest) []string {
	e.t.Helper()
	ids, err := e.sim.Enqueue(req)
	if err != nil {
		e.t.Fatalf("enqueue: %v", err)
	}
	return ids
}

func (e *testEnv) connect(runnerUUID string) {
	e.t.Helper()
	if err := e.sim.ConnectRunner(runnerUUID); err != nil {
		e.t.Fatal(err)
	}
}

// advance moves the clock and runs a scheduler pass.
func (e *testEnv) advance(d time.Duration) {
	e.clock.Step(d)
	e.sim.Tick()
}

func (e *testEnv) step(id string) StepView {
	e.t.Helper()
	for _, st := range e.sim.State().Steps {
		if st.UUID == id {
			return st
		}
	}
	e.t.Fatalf("step %s not in state", id)
	return StepView{}
}

func (e *testEnv) runner(id string) RunnerView {
	e.t.Helper()
	for _, r := range e.sim.State().Runners {
		if r.UUID == id {
			return r
		}
	}
	e.t.Fatalf("runner %s not in state", id)
	return RunnerView{}
}

// eventually polls cond for up to 5 s; the watchers and webhooks it waits
// for are asynchronous but fast.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRoutesRegisterAndUnknownPathIsEnvelope404(t *testing.T) {
	e := newEnv(t, Options{})
	resp := e.do(http.MethodGet, "/2.0/nothing/here", nil)
	if resp.status != http.StatusNotFound || !strings.Contains(resp.errorMessage(t), "not found") {
		t.Fatalf("got %d %s", resp.status, resp.body)
	}
}
