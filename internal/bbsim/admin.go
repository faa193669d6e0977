package bbsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
)

// adminPrefix is the simulator's own control API. It needs no credentials, is
// never rate limited and never sees injected faults.
const adminPrefix = "/_sim/"

// Snapshot is the simulator's full state, for tests, benchmarks and the demo.
type Snapshot struct {
	Now        time.Time    `json:"now"`
	Workspaces []Workspace  `json:"workspaces"`
	Runners    []RunnerView `json:"runners"`
	// Steps lists every step in enqueue order, finished ones included.
	Steps []StepView `json:"steps"`
	// Queue holds the UUIDs of the steps waiting for a runner, oldest first.
	Queue []string `json:"queue"`
	// Calls counts API calls per endpoint pattern, e.g. "GET /internal/workspaces/{ws}/pipelines-config/runners".
	// Requests answered by an injected fault never reach the API and are not counted.
	Calls map[string]int `json:"calls"`
	// CallsByCredential splits Calls per credential ("oauth:<client id>",
	// "access-token:#1", "basic:<user>", "unauthenticated"); no secret appears.
	CallsByCredential map[string]map[string]int `json:"calls_by_credential"`
	// RateLimitHits counts 429 answers per credential from the hourly budget.
	RateLimitHits map[string]int `json:"rate_limit_hits"`
	// TokenRequests counts token-endpoint grants per OAuth client id ("rejected"
	// for bad credentials); they do not draw from the hourly budget.
	TokenRequests    map[string]int `json:"token_requests"`
	Agents           []AgentView    `json:"agents"`
	Webhooks         []WebhookView  `json:"webhooks"`
	RejectedWebhooks []string       `json:"rejected_webhooks,omitempty"`
	Faults           Faults         `json:"-"`
	NoMatch          string         `json:"no_match"`
	HourlyLimit      int            `json:"hourly_limit"`
}

// RunnerView is a runner as the simulator knows it, including what the API hides.
type RunnerView struct {
	UUID       string   `json:"uuid"`
	Name       string   `json:"name"`
	Labels     []string `json:"labels"`
	Workspace  string   `json:"workspace"`
	Repository string   `json:"repository,omitempty"`
	Status     string   `json:"status"`
	Connected  bool     `json:"connected"`
	Disabled   bool     `json:"disabled"`
	// Step is the UUID of the step it runs now, if any.
	Step string `json:"step,omitempty"`
	// StepsCompleted counts the steps it finished successfully, for recycling decisions.
	StepsCompleted int       `json:"steps_completed"`
	CreatedOn      time.Time `json:"created_on"`
	UpdatedOn      time.Time `json:"updated_on"`
	AgentPod       string    `json:"agent_pod,omitempty"`
	AgentIssue     string    `json:"agent_issue,omitempty"`
	// RealAgent is set while a real agent (agent API) holds the runner.
	RealAgent bool `json:"real_agent,omitempty"`
}

// StepView is one step with the timestamps benchmarks need for queue waits.
type StepView struct {
	UUID            string        `json:"uuid"`
	Name            string        `json:"name"`
	Pipeline        string        `json:"pipeline"`
	BuildNumber     int           `json:"build_number"`
	Workspace       string        `json:"workspace"`
	Repository      string        `json:"repository"`
	RunsOn          []string      `json:"runs_on"`
	Duration        time.Duration `json:"-"`
	DurationSeconds float64       `json:"duration_seconds"`
	// Status is queued, running or completed.
	Status      string     `json:"status"`
	Result      string     `json:"result,omitempty"`
	Reason      string     `json:"reason,omitempty"`
	Runner      string     `json:"runner,omitempty"`
	EnqueuedAt  time.Time  `json:"enqueued_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	// ExitCode and Log are what a real agent reported (agent API).
	ExitCode *int   `json:"exit_code,omitempty"`
	Log      string `json:"log,omitempty"`
}

// CreateRunnerRequest creates a runner without going through the API (and its
// budget). Workspace empty means the first workspace; Repository empty means
// a workspace runner.
type CreateRunnerRequest struct {
	Workspace  string   `json:"workspace,omitempty"`
	Repository string   `json:"repository,omitempty"`
	Name       string   `json:"name"`
	Labels     []string `json:"labels"`
}

// CreatedRunner is a new runner with its one-time OAuth credentials.
type CreatedRunner struct {
	RunnerView
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
}

// State returns a copy of the whole simulated state.
func (s *Server) State() Snapshot {
	webhooks := s.hooks.views()
	faults := s.faults.get()
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := Snapshot{
		Now:               s.now(),
		Calls:             maps.Clone(s.calls),
		CallsByCredential: map[string]map[string]int{},
		RateLimitHits:     maps.Clone(s.rateLimitHits),
		TokenRequests:     maps.Clone(s.tokenRequests),
		Webhooks:          webhooks,
		RejectedWebhooks:  slices.Clone(s.rejectedHooks),
		Faults:            faults,
		NoMatch:           s.noMatch,
		HourlyLimit:       s.hourlyLimit,
		Runners:           []RunnerView{},
		Steps:             []StepView{},
		Queue:             []string{},
		Agents:            []AgentView{},
	}
	for cred, calls := range s.callsByCred {
		snap.CallsByCredential[cred] = maps.Clone(calls)
	}
	for _, ws := range s.workspaces {
		w := Workspace{UUID: ws.uuid, Slug: ws.slug}
		for _, r := range ws.repos {
			w.Repositories = append(w.Repositories, Repository{UUID: r.uuid, Slug: r.slug})
		}
		snap.Workspaces = append(snap.Workspaces, w)
	}
	for _, r := range s.runnerOrder {
		snap.Runners = append(snap.Runners, r.view())
	}
	for _, st := range s.stepOrder {
		snap.Steps = append(snap.Steps, st.view())
	}
	for _, st := range s.queue {
		if st.phase == phaseQueued {
			snap.Queue = append(snap.Queue, st.uuid)
		}
	}
	for _, ap := range s.agentPods {
		snap.Agents = append(snap.Agents, AgentView{Pod: ap.key, Runner: ap.runnerUUID, Connected: ap.connected, ConnectAt: ap.connectAt, Issue: ap.issue})
	}
	slices.SortFunc(snap.Agents, func(a, b AgentView) int { return a.ConnectAt.Compare(b.ConnectAt) })
	return snap
}

func (r *runner) view() RunnerView {
	v := RunnerView{
		UUID: r.uuid, Name: r.name, Labels: slices.Clone(r.labels), Workspace: r.ws.uuid,
		Status: r.status(), Connected: r.connected, Disabled: r.disabled,
		StepsCompleted: r.stepsCompleted, CreatedOn: r.createdOn, UpdatedOn: r.stateUpdatedOn,
		AgentPod: r.agentPod, AgentIssue: r.agentIssue, RealAgent: r.realAgent,
	}
	if r.repo != nil {
		v.Repository = r.repo.uuid
	}
	if r.current != nil {
		v.Step = r.current.uuid
	}
	return v
}

func (st *step) view() StepView {
	v := StepView{
		UUID: st.uuid, Name: st.name, Pipeline: st.pipeline.uuid, BuildNumber: st.pipeline.buildNumber,
		Workspace: st.pipeline.repo.ws.uuid, Repository: st.pipeline.repo.uuid,
		RunsOn: slices.Clone(st.runsOn), Duration: st.duration, DurationSeconds: st.duration.Seconds(),
		Status: st.phase.String(), Result: st.result, Reason: st.reason, Runner: st.runnerUUID,
		EnqueuedAt: st.enqueuedAt,
	}
	if !st.startedAt.IsZero() {
		started := st.startedAt
		v.StartedAt = &started
	}
	if st.phase == phaseDone {
		completed := st.completedAt
		v.CompletedAt = &completed
	}
	if st.reported {
		code := st.exitCode
		v.ExitCode, v.Log = &code, st.log
	}
	return v
}

// Step returns one step, with what its agent reported.
func (s *Server) Step(stepUUID string) (StepView, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.steps[braced(stepUUID)]
	if st == nil {
		return StepView{}, fmt.Errorf("step %s: not found", stepUUID)
	}
	return st.view(), nil
}

// CreateRunner registers a runner directly, as if through the runners API.
func (s *Server) CreateRunner(req CreateRunnerRequest) (CreatedRunner, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.workspaces) == 0 {
		return CreatedRunner{}, fmt.Errorf("create runner %s: no workspace configured", req.Name)
	}
	ws := s.workspaces[0]
	if req.Workspace != "" {
		if ws = s.findWorkspace(req.Workspace); ws == nil {
			return CreatedRunner{}, fmt.Errorf("create runner %s: workspace %s not found", req.Name, req.Workspace)
		}
	}
	var repo *repository
	if req.Repository != "" {
		if repo = findRepository(ws, req.Repository); repo == nil {
			return CreatedRunner{}, fmt.Errorf("create runner %s: repository %s not found", req.Name, req.Repository)
		}
	}
	r, err := s.createRunnerLocked(ws, repo, req.Name, req.Labels)
	if err != nil {
		return CreatedRunner{}, fmt.Errorf("create runner %s: %w", req.Name, err)
	}
	return CreatedRunner{RunnerView: r.view(), ClientID: r.clientID, ClientSecret: r.clientSecret}, nil
}

// UpdateRunnerRequest renames a runner and/or replaces its labels, as a person
// editing it in the Bitbucket UI would. A nil Name or Labels leaves that part
// as it is; Labels replaces the whole set and follows the creation rules.
type UpdateRunnerRequest struct {
	Name   *string  `json:"name,omitempty"`
	Labels []string `json:"labels,omitempty"`
}

// errRunnerNotFound tells the admin API to answer 404 rather than 400.
var errRunnerNotFound = errors.New("not found")

// UpdateRunner renames and/or relabels a runner behind the client's back. The
// runners API in the reference has no update endpoint, so only the admin API
// offers it. Its UUID, credentials, connection and state stay as they are; a
// step it runs finishes (labels only matter when a step is handed out), and
// queued steps are matched against the new labels at once.
func (s *Server) UpdateRunner(runnerUUID string, req UpdateRunnerRequest) (RunnerView, error) {
	var labels []string
	if req.Labels != nil {
		var err error
		if labels, err = validateLabels(req.Labels); err != nil {
			return RunnerView{}, fmt.Errorf("update runner %s: %w", runnerUUID, err)
		}
	}
	var name string
	if req.Name != nil {
		name = strings.TrimSpace(*req.Name)
		if name == "" || len(name) > maxRunnerNameSize {
			return RunnerView{}, fmt.Errorf("update runner %s: name is required and must be at most %d characters", runnerUUID, maxRunnerNameSize)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.findRunnerLocked(runnerUUID)
	if r == nil {
		return RunnerView{}, fmt.Errorf("update runner %s: %w", runnerUUID, errRunnerNotFound)
	}
	if req.Name != nil {
		r.name = name
	}
	if labels != nil {
		r.labels = labels
	}
	// updated_on moves, state.updated_on does not: the state did not change.
	r.updatedOn = s.now()
	s.needsSchedule = true
	s.scheduleLocked()
	s.log.V(1).Info("runner updated by the simulator", "runner", r.uuid, "name", r.name, "labels", r.labels)
	return r.view(), nil
}

// Reset returns to the state New built: configured workspaces, no runners, no
// steps, zero counters, the configured faults and webhooks. OAuth tokens
// already issued stay valid.
func (s *Server) Reset() {
	s.mu.Lock()
	s.resetLocked()
	s.rejectedHooks = nil
	s.mu.Unlock()
	s.faults.set(s.opts.Faults)
	s.hooks.clearTargets()
	for _, t := range s.opts.Webhooks {
		s.AddWebhook(t)
	}
	s.log.Info("simulator reset")
}

// SetNoMatch switches what happens to a step no ONLINE runner can take:
// "wait" keeps it queued, "fail" fails it.
func (s *Server) SetNoMatch(mode string) error {
	if mode != noMatchWait && mode != noMatchFail {
		return fmt.Errorf("set no-match: mode must be %q or %q, got %q", noMatchWait, noMatchFail, mode)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noMatch = mode
	s.needsSchedule = true
	s.scheduleLocked()
	return nil
}

// Throttle makes every API call of one credential ("access-token:#3", "oauth:<client id>",
// "basic:<user>", as in Snapshot.CallsByCredential) answer 429 without Retry-After while on,
// as Bitbucket does once that credential is over its limit; other credentials and the
// runners' agents go on. The calls are counted in Calls, CallsByCredential and RateLimitHits.
func (s *Server) Throttle(credential string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.throttled[credential] = true
	} else {
		delete(s.throttled, credential)
	}
}

// SetHourlyLimit changes the per-credential hourly budget; <0 disables it.
func (s *Server) SetHourlyLimit(limit int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hourlyLimit = limit
}

// Wire types of the admin API. Durations are plain numbers or Go duration
// strings so that curl users need not think in nanoseconds.
type enqueueBody struct {
	Count            int               `json:"count"`
	RunsOn           []string          `json:"runs_on"`
	DurationSeconds  float64           `json:"duration_seconds"`
	Workspace        string            `json:"workspace"`
	Repository       string            `json:"repository"`
	StepsPerPipeline int               `json:"steps_per_pipeline"`
	Script           string            `json:"script"`
	Image            string            `json:"image"`
	Files            map[string]string `json:"files"`
}

type faultsBody struct {
	ErrorRate  float64 `json:"error_rate"`
	ErrorCodes []int   `json:"error_codes,omitempty"`
	Latency    string  `json:"latency,omitempty"`
	DropRate   float64 `json:"drop_rate"`
	Force429   bool    `json:"force_429"`
	NoRetry    bool    `json:"no_retry_after,omitempty"`
	Seed       int64   `json:"seed,omitempty"`
}

func faultsToBody(f Faults) faultsBody {
	b := faultsBody{ErrorRate: f.ErrorRate, ErrorCodes: f.ErrorCodes, DropRate: f.DropRate, Force429: f.Force429, NoRetry: f.NoRetryAfter, Seed: f.Seed}
	if f.Latency > 0 {
		b.Latency = f.Latency.String()
	}
	return b
}

func (b faultsBody) toFaults() (Faults, error) {
	f := Faults{ErrorRate: b.ErrorRate, ErrorCodes: b.ErrorCodes, DropRate: b.DropRate, Force429: b.Force429, NoRetryAfter: b.NoRetry, Seed: b.Seed}
	if b.Latency != "" {
		d, err := time.ParseDuration(b.Latency)
		if err != nil {
			return Faults{}, fmt.Errorf("parse latency: %w", err)
		}
		f.Latency = d
	}
	if f.ErrorRate < 0 || f.ErrorRate > 1 || f.DropRate < 0 || f.DropRate > 1 {
		return Faults{}, fmt.Errorf("rates must be between 0 and 1")
	}
	for _, code := range f.ErrorCodes {
		if code < 500 || code > 599 {
			return Faults{}, fmt.Errorf("error code %d is not a 5xx status", code)
		}
	}
	return f, nil
}

type configBody struct {
	NoMatch     string `json:"no_match,omitempty"`
	HourlyLimit *int   `json:"hourly_limit,omitempty"`
}

// stateBody adds the faults in their wire form to the snapshot.
type stateBody struct {
	Snapshot
	Faults faultsBody `json:"faults"`
}

func (s *Server) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /_sim/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /_sim/state", func(w http.ResponseWriter, _ *http.Request) {
		snap := s.State()
		writeJSON(w, http.StatusOK, stateBody{Snapshot: snap, Faults: faultsToBody(snap.Faults)})
	})
	mux.HandleFunc("POST /_sim/enqueue", func(w http.ResponseWriter, r *http.Request) {
		var body enqueueBody
		if !decodeAdmin(w, r, &body) {
			return
		}
		ids, err := s.Enqueue(EnqueueRequest{
			Count: body.Count, RunsOn: body.RunsOn, Duration: time.Duration(body.DurationSeconds * float64(time.Second)),
			Workspace: body.Workspace, Repository: body.Repository, StepsPerPipeline: body.StepsPerPipeline,
			Script: body.Script, Image: body.Image, Files: body.Files,
		})
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string][]string{"steps": ids})
	})
	mux.HandleFunc("GET /_sim/steps/{step}", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.Step(r.PathValue("step"))
		if err != nil {
			writeError(w, http.StatusNotFound, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("POST /_sim/runners", func(w http.ResponseWriter, r *http.Request) {
		var body CreateRunnerRequest
		if !decodeAdmin(w, r, &body) {
			return
		}
		created, err := s.CreateRunner(body)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, created)
	})
	mux.HandleFunc("PATCH /_sim/runners/{runner}", func(w http.ResponseWriter, r *http.Request) {
		var body UpdateRunnerRequest
		if !decodeAdmin(w, r, &body) {
			return
		}
		updated, err := s.UpdateRunner(r.PathValue("runner"), body)
		switch {
		case errors.Is(err, errRunnerNotFound):
			writeError(w, http.StatusNotFound, err.Error())
		case err != nil:
			writeError(w, http.StatusBadRequest, err.Error())
		default:
			writeJSON(w, http.StatusOK, updated)
		}
	})
	mux.HandleFunc("POST /_sim/runners/{runner}/connect", func(w http.ResponseWriter, r *http.Request) {
		adminResult(w, s.ConnectRunner(r.PathValue("runner")), http.StatusNotFound)
	})
	mux.HandleFunc("POST /_sim/runners/{runner}/disconnect", func(w http.ResponseWriter, r *http.Request) {
		adminResult(w, s.DisconnectRunner(r.PathValue("runner")), http.StatusNotFound)
	})
	mux.HandleFunc("GET /_sim/faults", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, faultsToBody(s.faults.get()))
	})
	setFaults := func(w http.ResponseWriter, r *http.Request) {
		var body faultsBody
		if !decodeAdmin(w, r, &body) {
			return
		}
		f, err := body.toFaults()
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.SetFaults(f)
		writeJSON(w, http.StatusOK, faultsToBody(s.faults.get()))
	}
	mux.HandleFunc("PUT /_sim/faults", setFaults)
	mux.HandleFunc("POST /_sim/faults", setFaults)
	mux.HandleFunc("PUT /_sim/throttle", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Credential string `json:"credential"`
			On         bool   `json:"on"`
		}
		if !decodeAdmin(w, r, &body) {
			return
		}
		if body.Credential == "" {
			writeError(w, http.StatusBadRequest, "credential is required")
			return
		}
		s.Throttle(body.Credential, body.On)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("PUT /_sim/config", func(w http.ResponseWriter, r *http.Request) {
		var body configBody
		if !decodeAdmin(w, r, &body) {
			return
		}
		if body.NoMatch != "" {
			if err := s.SetNoMatch(body.NoMatch); err != nil {
				writeError(w, http.StatusBadRequest, err.Error())
				return
			}
		}
		if body.HourlyLimit != nil {
			s.SetHourlyLimit(*body.HourlyLimit)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_sim/webhooks", func(w http.ResponseWriter, r *http.Request) {
		var body WebhookTarget
		if !decodeAdmin(w, r, &body) {
			return
		}
		if err := validateWebhookURL(body.URL); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.AddWebhook(body)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_sim/reset", func(w http.ResponseWriter, _ *http.Request) {
		s.Reset()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_sim/tick", func(w http.ResponseWriter, _ *http.Request) {
		s.Tick()
		w.WriteHeader(http.StatusNoContent)
	})
}

func decodeAdmin(w http.ResponseWriter, r *http.Request, into any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("decode request: %v", err))
		return false
	}
	return true
}

func adminResult(w http.ResponseWriter, err error, failStatus int) {
	if err != nil {
		writeError(w, failStatus, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
