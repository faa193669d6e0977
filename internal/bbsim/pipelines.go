package bbsim

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Wire types of the public /2.0 API, shaped after Bitbucket's OpenAPI schemas
// (pipeline, pipeline_step, workspace, repository).
type nameType struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

type stateJSON struct {
	Name   string    `json:"name"`
	Type   string    `json:"type"`
	Stage  *nameType `json:"stage,omitempty"`
	Result *nameType `json:"result,omitempty"`
}

type typedUUID struct {
	Type string `json:"type"`
	UUID string `json:"uuid"`
}

type commitJSON struct {
	Type string `json:"type"`
	Hash string `json:"hash"`
}

type selectorJSON struct {
	Type    string `json:"type"`
	Pattern string `json:"pattern,omitempty"`
}

type targetJSON struct {
	Type     string       `json:"type"`
	RefType  string       `json:"ref_type"`
	RefName  string       `json:"ref_name"`
	Commit   commitJSON   `json:"commit"`
	Selector selectorJSON `json:"selector"`
}

type actorJSON struct {
	Type        string `json:"type"`
	UUID        string `json:"uuid"`
	DisplayName string `json:"display_name"`
}

type linkJSON struct {
	Href string `json:"href"`
}

type workspaceJSON struct {
	Type      string              `json:"type"`
	UUID      string              `json:"uuid"`
	Slug      string              `json:"slug"`
	Name      string              `json:"name"`
	IsPrivate bool                `json:"is_private"`
	Links     map[string]linkJSON `json:"links,omitempty"`
}

type repositoryJSON struct {
	Type      string              `json:"type"`
	UUID      string              `json:"uuid"`
	Slug      string              `json:"slug"`
	Name      string              `json:"name"`
	FullName  string              `json:"full_name"`
	IsPrivate bool                `json:"is_private"`
	Workspace *workspaceJSON      `json:"workspace,omitempty"`
	Links     map[string]linkJSON `json:"links,omitempty"`
}

type pipelineJSON struct {
	Type             string         `json:"type"`
	UUID             string         `json:"uuid"`
	BuildNumber      int            `json:"build_number"`
	CreatedOn        string         `json:"created_on"`
	CompletedOn      string         `json:"completed_on,omitempty"`
	State            stateJSON      `json:"state"`
	Target           targetJSON     `json:"target"`
	Trigger          nameType       `json:"trigger"`
	Creator          actorJSON      `json:"creator"`
	Repository       repositoryJSON `json:"repository"`
	BuildSecondsUsed int            `json:"build_seconds_used"`
}

type commandJSON struct {
	Name    string `json:"name"`
	Command string `json:"command"`
}

type imageJSON struct {
	Name string `json:"name"`
}

type stepJSON struct {
	Type              string        `json:"type"`
	UUID              string        `json:"uuid"`
	Name              string        `json:"name"`
	RunNumber         int           `json:"run_number"`
	Pipeline          typedUUID     `json:"pipeline"`
	StartedOn         string        `json:"started_on,omitempty"`
	CompletedOn       string        `json:"completed_on,omitempty"`
	DurationInSeconds *int          `json:"duration_in_seconds,omitempty"`
	State             stateJSON     `json:"state"`
	Image             imageJSON     `json:"image"`
	SetupCommands     []commandJSON `json:"setup_commands"`
	ScriptCommands    []commandJSON `json:"script_commands"`
	Trigger           struct {
		Type string `json:"type"`
	} `json:"trigger"`
}

const (
	buildImage = "atlassian/default-image:4"
	// pipelinesActor stands in for whoever pushed the commit.
	pipelinesActorUUID = "{0d6c2f4a-3b1e-4c5d-8e7f-9a0b1c2d3e4f}"
	pipelinesActorName = "Demo User"
)

var pipelinesActor = actorJSON{Type: "user", UUID: pipelinesActorUUID, DisplayName: pipelinesActorName}

func workspaceToJSON(ws *workspace) *workspaceJSON {
	return &workspaceJSON{
		Type: "workspace", UUID: ws.uuid, Slug: ws.slug, Name: ws.slug, IsPrivate: true,
		Links: map[string]linkJSON{"html": {Href: "https://bitbucket.org/" + ws.slug + "/"}},
	}
}

func repositoryToJSON(repo *repository) repositoryJSON {
	return repositoryJSON{
		Type: "repository", UUID: repo.uuid, Slug: repo.slug, Name: repo.slug,
		FullName: repo.fullName(), IsPrivate: true, Workspace: workspaceToJSON(repo.ws),
		Links: map[string]linkJSON{"html": {Href: "https://bitbucket.org/" + repo.fullName()}},
	}
}

// state maps the step phases of a pipeline to the pipeline state object.
func (p *pipeline) state() stateJSON {
	switch {
	case p.completed():
		result := p.result()
		return stateJSON{
			Name: "COMPLETED", Type: "pipeline_state_completed",
			Result: &nameType{Name: result, Type: "pipeline_state_completed_" + strings.ToLower(result)},
		}
	case p.started():
		return stateJSON{
			Name: "IN_PROGRESS", Type: "pipeline_state_in_progress",
			Stage: &nameType{Name: "RUNNING", Type: "pipeline_state_in_progress_running"},
		}
	}
	return stateJSON{Name: "PENDING", Type: "pipeline_state_pending"}
}

func (p *pipeline) toJSON() pipelineJSON {
	out := pipelineJSON{
		Type: "pipeline", UUID: p.uuid, BuildNumber: p.buildNumber,
		CreatedOn: bitbucketTime(p.createdOn),
		State:     p.state(),
		Target: targetJSON{
			Type: "pipeline_ref_target", RefType: "branch", RefName: p.refName,
			Commit:   commitJSON{Type: "commit", Hash: p.commit},
			Selector: selectorJSON{Type: "default"},
		},
		Trigger:    nameType{Name: "PUSH", Type: "pipeline_trigger_push"},
		Creator:    pipelinesActor,
		Repository: repositoryToJSON(p.repo),
	}
	if p.completed() {
		out.CompletedOn = bitbucketTime(p.completedOn())
	}
	for _, st := range p.steps {
		if !st.startedAt.IsZero() && st.phase == phaseDone {
			out.BuildSecondsUsed += int(st.completedAt.Sub(st.startedAt).Round(time.Second) / time.Second)
		}
	}
	return out
}

func (st *step) state() stateJSON {
	switch st.phase {
	case phaseRunning:
		return stateJSON{Name: "IN_PROGRESS", Type: "pipeline_step_state_in_progress"}
	case phaseDone:
		return stateJSON{
			Name: "COMPLETED", Type: "pipeline_step_state_completed",
			Result: &nameType{Name: st.result, Type: "pipeline_step_state_completed_" + strings.ToLower(st.result)},
		}
	}
	return stateJSON{
		Name: "PENDING", Type: "pipeline_step_state_pending",
		Stage: &nameType{Name: "PENDING", Type: "pipeline_step_state_pending_pending"},
	}
}

func (st *step) toJSON(now time.Time) stepJSON {
	out := stepJSON{
		Type: "pipeline_step", UUID: st.uuid, Name: st.name, RunNumber: st.runNumber,
		Pipeline:       typedUUID{Type: "pipeline", UUID: st.pipeline.uuid},
		State:          st.state(),
		Image:          imageJSON{Name: buildImage},
		SetupCommands:  []commandJSON{{Name: "Clone", Command: "git clone"}},
		ScriptCommands: []commandJSON{{Name: "sleep", Command: fmt.Sprintf("sleep %d", int(st.duration.Seconds()))}},
	}
	out.Trigger.Type = "pipeline_step_trigger_automatic"
	if !st.startedAt.IsZero() {
		out.StartedOn = bitbucketTime(st.startedAt)
		end := now
		if st.phase == phaseDone {
			end = st.completedAt
		}
		seconds := int(end.Sub(st.startedAt) / time.Second)
		out.DurationInSeconds = &seconds
	}
	if st.phase == phaseDone {
		out.CompletedOn = bitbucketTime(st.completedAt)
	}
	return out
}

// pipelineStatusFilters maps the values of the repeatable status= filter
// (jira BCLOUD-21254) to the state they select.
var pipelineStatusFilters = map[string]func(stateJSON) bool{
	"PENDING":     func(s stateJSON) bool { return s.Name == "PENDING" },
	"BUILDING":    func(s stateJSON) bool { return s.Name == "IN_PROGRESS" },
	"IN_PROGRESS": func(s stateJSON) bool { return s.Name == "IN_PROGRESS" },
	"PASSED":      resultIs(ResultSuccessful),
	"SUCCESSFUL":  resultIs(ResultSuccessful),
	"FAILED":      resultIs(ResultFailed),
	"ERROR":       resultIs(ResultError),
	"STOPPED":     resultIs("STOPPED"),
	"EXPIRED":     resultIs("EXPIRED"),
	"PAUSED":      func(stateJSON) bool { return false },
	"HALTED":      func(stateJSON) bool { return false },
	"SKIPPED":     func(stateJSON) bool { return false },
	"PARSING":     func(stateJSON) bool { return false },
}

func resultIs(result string) func(stateJSON) bool {
	return func(s stateJSON) bool { return s.Result != nil && s.Result.Name == result }
}

func (s *Server) repoFromPathLocked(w http.ResponseWriter, r *http.Request) (*repository, bool) {
	_, repo, missing := s.resolveScope(r.PathValue("ws"), r.PathValue("repo"))
	if missing != "" {
		writeError(w, http.StatusNotFound, missing)
		return nil, false
	}
	return repo, true
}

func (s *Server) handleGetWorkspace(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.findWorkspace(r.PathValue("ws"))
	if ws == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("Workspace %s not found", r.PathValue("ws")))
		return
	}
	writeJSON(w, http.StatusOK, workspaceToJSON(ws))
}

// handleListRepositories lists a workspace's repositories. The q= and role=
// filters are accepted and ignored: every simulated repository matches.
func (s *Server) handleListRepositories(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.findWorkspace(r.PathValue("ws"))
	if ws == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("Workspace %s not found", r.PathValue("ws")))
		return
	}
	out := make([]repositoryJSON, 0, len(ws.repos))
	for _, repo := range ws.repos {
		out = append(out, repositoryToJSON(repo))
	}
	writePage(w, r, out)
}

func (s *Server) handleGetRepository(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	repo, ok := s.repoFromPathLocked(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, repositoryToJSON(repo))
}

func (s *Server) handleListPipelines(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var filters []func(stateJSON) bool
	for _, status := range q["status"] {
		match, known := pipelineStatusFilters[strings.ToUpper(status)]
		if !known {
			writeErrorDetail(w, http.StatusBadRequest, "Bad request", fmt.Sprintf("Invalid status provided '%s'", status))
			return
		}
		filters = append(filters, match)
	}
	descending := false
	switch sort := q.Get("sort"); sort {
	case "", "created_on", "build_number":
	case "-created_on", "-build_number":
		descending = true
	default:
		writeErrorDetail(w, http.StatusBadRequest, "Bad request", fmt.Sprintf("Invalid sort attribute provided '%s'", strings.TrimPrefix(sort, "-")))
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	repo, ok := s.repoFromPathLocked(w, r)
	if !ok {
		return
	}
	var selected []*pipeline
	for _, p := range s.pipelines {
		if p.repo != repo {
			continue
		}
		state := p.state()
		if len(filters) > 0 && !slices.ContainsFunc(filters, func(match func(stateJSON) bool) bool { return match(state) }) {
			continue
		}
		selected = append(selected, p)
	}
	slices.SortFunc(selected, func(a, b *pipeline) int { return cmp.Compare(a.buildNumber, b.buildNumber) })
	if descending {
		slices.Reverse(selected)
	}
	out := make([]pipelineJSON, 0, len(selected))
	for _, p := range selected {
		out = append(out, p.toJSON())
	}
	writePage(w, r, out)
}

func (s *Server) pipelineFromPathLocked(w http.ResponseWriter, r *http.Request) (*pipeline, bool) {
	repo, ok := s.repoFromPathLocked(w, r)
	if !ok {
		return nil, false
	}
	id := r.PathValue("pipeline")
	for _, p := range s.pipelines {
		if p.repo == repo && sameID(p.uuid, id) {
			return p, true
		}
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("Pipeline %s not found", id))
	return nil, false
}

func (s *Server) handleGetPipeline(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pipelineFromPathLocked(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, p.toJSON())
}

func (s *Server) handleListSteps(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pipelineFromPathLocked(w, r)
	if !ok {
		return
	}
	now := s.now()
	out := make([]stepJSON, 0, len(p.steps))
	for _, st := range p.steps {
		out = append(out, st.toJSON(now))
	}
	writePage(w, r, out)
}

func (s *Server) handleGetStep(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pipelineFromPathLocked(w, r)
	if !ok {
		return
	}
	id := r.PathValue("step")
	for _, st := range p.steps {
		if sameID(st.uuid, id) {
			writeJSON(w, http.StatusOK, st.toJSON(s.now()))
			return
		}
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("Step %s not found", id))
}

// handleSource serves bitbucket-pipelines.yml at a pipeline's commit, the only
// place where Bitbucket exposes a waiting step's runs-on labels. A branch
// name resolves to the newest pipeline of that branch.
func (s *Server) handleSource(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	repo, ok := s.repoFromPathLocked(w, r)
	if !ok {
		return
	}
	commit, path := r.PathValue("commit"), r.PathValue("path")
	var found *pipeline
	for _, p := range s.pipelines {
		if p.repo != repo {
			continue
		}
		byCommit := len(commit) >= 7 && strings.HasPrefix(p.commit, commit)
		byBranch := p.refName == commit && (found == nil || p.buildNumber > found.buildNumber)
		if byCommit || byBranch {
			found = p
			if byCommit {
				break
			}
		}
	}
	if found == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("Commit %s not found", commit))
		return
	}
	if path != "bitbucket-pipelines.yml" {
		writeError(w, http.StatusNotFound, fmt.Sprintf("No such file or directory: %s", path))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(pipelineYAML(found)))
}

// pipelineYAML renders the pipeline file a pipeline ran from: its steps with
// their runs-on labels, grouped in a parallel block when there are several.
// Labels are validated lowercase alphanumerics and dots, so need no quoting.
func pipelineYAML(p *pipeline) string {
	var b strings.Builder
	fmt.Fprintf(&b, "image: %s\n\npipelines:\n  default:\n", buildImage)
	indent := "    "
	if len(p.steps) > 1 {
		b.WriteString("    - parallel:\n")
		indent = "        "
	}
	for _, st := range p.steps {
		fmt.Fprintf(&b, "%s- step:\n", indent)
		fmt.Fprintf(&b, "%s    name: %s\n", indent, st.name)
		fmt.Fprintf(&b, "%s    runs-on:\n", indent)
		for _, l := range st.runsOn {
			fmt.Fprintf(&b, "%s      - %s\n", indent, l)
		}
		fmt.Fprintf(&b, "%s    script:\n", indent)
		fmt.Fprintf(&b, "%s      - sleep %d\n", indent, int(st.duration.Seconds()))
	}
	return b.String()
}
