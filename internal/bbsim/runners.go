package bbsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Runner status values as the runners API reports them.
const (
	StatusUnregistered = "UNREGISTERED"
	StatusOnline       = "ONLINE"
	StatusOffline      = "OFFLINE"
	StatusDisabled     = "DISABLED"
	StatusEnabled      = "ENABLED" // only ever sent by clients, as a PUT target
)

// Label rules of the Bitbucket "add runner" dialog: lowercase alphanumerics
// and dots, at most 10 custom labels, and the system labels self.hosted plus
// one OS label that cannot be removed.
const (
	labelSelfHosted   = "self.hosted"
	maxCustomLabels   = 10
	maxLabelLength    = 50
	maxRunnerNameSize = 100
)

var (
	labelPattern = regexp.MustCompile(`^[a-z0-9]+(\.[a-z0-9]+)*$`)
	// The ARM label is reported both as linux.arm64 and linux.arm, so both are accepted.
	osLabels = []string{"linux", "linux.arm64", "linux.arm", "linux.shell", "windows", "macos"}
)

// The runner's own OAuth client authenticates against an identity provider
// that is not Bitbucket. These names cannot resolve, so nothing is ever sent there.
const (
	runnerTokenEndpoint = "https://auth.bbsim.invalid/oauth/token"
	runnerAudience      = "api.bbsim.invalid"
	agentVersion        = "3.0.0"
)

type runner struct {
	uuid           string
	name           string
	labels         []string
	ws             *workspace
	repo           *repository // nil for a workspace runner
	clientID       string
	clientSecret   string
	createdOn      time.Time
	updatedOn      time.Time
	stateUpdatedOn time.Time
	disabled       bool
	connected      bool
	everConnected  bool
	agentPod       string // namespace/name of the pod whose agent holds the connection
	agentIssue     string // why the last agent could not connect
	current        *step
	realAgent      bool      // the connection is a real agent's (agent API), not a pod's emulated one
	lastHeartbeat  time.Time // of the real agent
	stepsCompleted int
	idleSince      time.Time
}

// status derives the reported status: DISABLED wins over connectivity because
// Bitbucket shows a disabled runner as DISABLED whether or not its agent runs.
func (r *runner) status() string {
	switch {
	case r.disabled:
		return StatusDisabled
	case r.connected:
		return StatusOnline
	case r.everConnected:
		return StatusOffline
	}
	return StatusUnregistered
}

// schedulable reports whether the runner may take a new step.
func (r *runner) schedulable() bool { return r.connected && !r.disabled }

func (r *runner) inScope(ws *workspace, repo *repository) bool {
	return r.ws == ws && r.repo == repo
}

// serves reports whether a step of repo may run on this runner: workspace
// runners serve every repository of their workspace, repository runners only
// their own.
func (r *runner) serves(repo *repository) bool {
	if r.repo != nil {
		return r.repo == repo
	}
	return r.ws == repo.ws
}

func (r *runner) hasLabels(want []string) bool {
	for _, l := range want {
		if !slices.Contains(r.labels, l) {
			return false
		}
	}
	return true
}

// Wire types of the runners API.
type runnerJSON struct {
	UUID        string          `json:"uuid"`
	Name        string          `json:"name"`
	Labels      []string        `json:"labels"`
	State       runnerStateJSON `json:"state"`
	CreatedOn   string          `json:"created_on"`
	UpdatedOn   string          `json:"updated_on"`
	OAuthClient oauthClientJSON `json:"oauth_client"`
}

type runnerStateJSON struct {
	Status    string          `json:"status"`
	UpdatedOn string          `json:"updated_on"`
	Version   *versionJSON    `json:"version,omitempty"`
	Step      *runnerStepJSON `json:"step,omitempty"`
}

type versionJSON struct {
	Current string `json:"current"`
}

type runnerStepJSON struct {
	UUID       string  `json:"uuid"`
	Pipeline   uuidRef `json:"pipeline"`
	Repository uuidRef `json:"repository"`
}

type uuidRef struct {
	UUID string `json:"uuid"`
}

type oauthClientJSON struct {
	ID            string `json:"id"`
	Secret        string `json:"secret,omitempty"`
	TokenEndpoint string `json:"token_endpoint"`
	Audience      string `json:"audience"`
}

type createRunnerBody struct {
	Name   string   `json:"name"`
	Labels []string `json:"labels"`
}

type runnerStateBody struct {
	Status string `json:"status"`
}

func (r *runner) toJSON(withSecret bool) runnerJSON {
	out := runnerJSON{
		UUID:      r.uuid,
		Name:      r.name,
		Labels:    slices.Clone(r.labels),
		CreatedOn: bitbucketTime(r.createdOn),
		UpdatedOn: bitbucketTime(r.updatedOn),
		State: runnerStateJSON{
			Status:    r.status(),
			UpdatedOn: bitbucketTime(r.stateUpdatedOn),
		},
		OAuthClient: oauthClientJSON{ID: r.clientID, TokenEndpoint: runnerTokenEndpoint, Audience: runnerAudience},
	}
	if withSecret {
		out.OAuthClient.Secret = r.clientSecret
	}
	if r.everConnected {
		out.State.Version = &versionJSON{Current: agentVersion}
	}
	if st := r.current; st != nil {
		out.State.Step = &runnerStepJSON{
			UUID:       st.uuid,
			Pipeline:   uuidRef{UUID: st.pipeline.uuid},
			Repository: uuidRef{UUID: st.pipeline.repo.uuid},
		}
	}
	return out
}

// validateLabels checks the label rules and returns the labels without duplicates.
func validateLabels(labels []string) ([]string, error) {
	if len(labels) == 0 {
		return nil, fmt.Errorf("labels are required: %s plus one OS label such as linux", labelSelfHosted)
	}
	var out []string
	osCount, custom := 0, 0
	for _, l := range labels {
		if len(l) > maxLabelLength || !labelPattern.MatchString(l) {
			return nil, fmt.Errorf("invalid label %q: labels may contain only lowercase letters, digits and dots, up to %d characters", l, maxLabelLength)
		}
		if slices.Contains(out, l) {
			continue
		}
		out = append(out, l)
		switch {
		case l == labelSelfHosted:
		case slices.Contains(osLabels, l):
			osCount++
		default:
			custom++
		}
	}
	if !slices.Contains(out, labelSelfHosted) {
		return nil, fmt.Errorf("label %s is required", labelSelfHosted)
	}
	if osCount != 1 {
		return nil, fmt.Errorf("exactly one OS label is required (one of %s), got %d", strings.Join(osLabels, ", "), osCount)
	}
	if custom > maxCustomLabels {
		return nil, fmt.Errorf("at most %d custom labels are allowed, got %d", maxCustomLabels, custom)
	}
	return out, nil
}

// errRunnerLimit is reported as 400: Bitbucket's status for this case is not
// documented, and 400 with a message naming the limit is what a client can act on
// without mistaking it for a conflict it could retry.
type errRunnerLimit struct{ limit int }

func (e errRunnerLimit) Error() string {
	return fmt.Sprintf("The runner limit of %d runners for this account has been reached.", e.limit)
}

// createRunnerLocked registers a new runner in the given scope.
func (s *Server) createRunnerLocked(ws *workspace, repo *repository, name string, labels []string) (*runner, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > maxRunnerNameSize {
		return nil, fmt.Errorf("name is required and must be at most %d characters", maxRunnerNameSize)
	}
	labels, err := validateLabels(labels)
	if err != nil {
		return nil, err
	}
	inScope := 0
	for _, r := range s.runnerOrder {
		if r.inScope(ws, repo) {
			inScope++
		}
	}
	if inScope >= s.opts.RunnerLimit {
		return nil, errRunnerLimit{limit: s.opts.RunnerLimit}
	}
	now := s.now()
	r := &runner{
		uuid: newUUID(), name: name, labels: labels, ws: ws, repo: repo,
		clientID:     randomToken(16),
		clientSecret: randomToken(32),
		createdOn:    now, updatedOn: now, stateUpdatedOn: now, idleSince: now,
	}
	s.runners[r.uuid] = r
	s.runnerOrder = append(s.runnerOrder, r)
	s.log.V(1).Info("runner created", "runner", r.uuid, "name", name, "workspace", ws.uuid)
	return r, nil
}

// touchRunnerLocked records a state transition.
func (s *Server) touchRunnerLocked(r *runner) {
	now := s.now()
	r.updatedOn, r.stateUpdatedOn = now, now
	s.needsSchedule = true
}

func (s *Server) deleteRunnerLocked(r *runner) {
	if r.current != nil {
		s.failStepLocked(r.current, ResultError, fmt.Sprintf("runner %s was deleted while running the step", r.uuid))
	}
	for _, ap := range s.agentPods {
		if ap.runnerUUID == r.uuid && ap.connected {
			// The real agent would now fail to authenticate and restart over and over.
			ap.connected = false
			ap.issue = fmt.Sprintf("runner %s was deleted", r.uuid)
		}
	}
	delete(s.runners, r.uuid)
	s.runnerOrder = slices.DeleteFunc(s.runnerOrder, func(x *runner) bool { return x == r })
	s.needsSchedule = true
	s.log.V(1).Info("runner deleted", "runner", r.uuid)
}

// lookupRunnerLocked finds a runner by UUID within a scope.
func (s *Server) lookupRunnerLocked(ws *workspace, repo *repository, id string) *runner {
	for _, r := range s.runnerOrder {
		if sameID(r.uuid, id) && r.inScope(ws, repo) {
			return r
		}
	}
	return nil
}

// runnerScope resolves the {ws} and optional {repo} path values of a runners
// API request, answering 404 itself when they do not exist.
func (s *Server) runnerScopeLocked(w http.ResponseWriter, r *http.Request) (*workspace, *repository, bool) {
	repoKey := r.PathValue("repo")
	ws, repo, missing := s.resolveScope(r.PathValue("ws"), repoKey)
	if missing != "" {
		writeError(w, http.StatusNotFound, missing)
		return nil, nil, false
	}
	return ws, repo, true
}

func (s *Server) handleListRunners(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws, repo, ok := s.runnerScopeLocked(w, r)
	if !ok {
		return
	}
	var out []runnerJSON
	for _, rn := range s.runnerOrder {
		if rn.inScope(ws, repo) {
			out = append(out, rn.toJSON(false))
		}
	}
	writePage(w, r, out)
}

func (s *Server) handleCreateRunner(w http.ResponseWriter, r *http.Request) {
	var body createRunnerBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil {
		writeErrorDetail(w, http.StatusBadRequest, "Bad request", fmt.Sprintf("decode runner: %v", err))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ws, repo, ok := s.runnerScopeLocked(w, r)
	if !ok {
		return
	}
	created, err := s.createRunnerLocked(ws, repo, body.Name, body.Labels)
	if err != nil {
		if limitErr, isLimit := err.(errRunnerLimit); isLimit {
			writeError(w, http.StatusBadRequest, limitErr.Error())
			return
		}
		writeErrorDetail(w, http.StatusBadRequest, "Bad request", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, created.toJSON(true))
}

func (s *Server) handleGetRunner(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rn, ok := s.runnerFromPathLocked(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, rn.toJSON(false))
}

func (s *Server) handleDeleteRunner(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rn, ok := s.runnerFromPathLocked(w, r)
	if !ok {
		return
	}
	s.deleteRunnerLocked(rn)
	s.scheduleLocked()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleRunnerState(w http.ResponseWriter, r *http.Request) {
	var body runnerStateBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil {
		writeErrorDetail(w, http.StatusBadRequest, "Bad request", fmt.Sprintf("decode state: %v", err))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rn, ok := s.runnerFromPathLocked(w, r)
	if !ok {
		return
	}
	switch body.Status {
	case StatusDisabled:
		rn.disabled = true
	case StatusEnabled:
		rn.disabled = false
	default:
		writeErrorDetail(w, http.StatusBadRequest, "Bad request", fmt.Sprintf("status must be %s or %s, got %q", StatusDisabled, StatusEnabled, body.Status))
		return
	}
	s.touchRunnerLocked(rn)
	s.scheduleLocked()
	writeJSON(w, http.StatusOK, rn.toJSON(false))
}

func (s *Server) runnerFromPathLocked(w http.ResponseWriter, r *http.Request) (*runner, bool) {
	ws, repo, ok := s.runnerScopeLocked(w, r)
	if !ok {
		return nil, false
	}
	rn := s.lookupRunnerLocked(ws, repo, r.PathValue("runner"))
	if rn == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("Runner %s not found", r.PathValue("runner")))
		return nil, false
	}
	return rn, true
}
