package bitbucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Pipeline status filter values for ListPipelines (jira.atlassian.com
// BCLOUD-21254: "running" is PENDING, BUILDING, IN_PROGRESS).
const (
	PipelineStatusPending    = "PENDING"
	PipelineStatusBuilding   = "BUILDING"
	PipelineStatusInProgress = "IN_PROGRESS"
)

// RunningPipelineStatuses selects pipelines that may still have steps waiting.
var RunningPipelineStatuses = []string{PipelineStatusPending, PipelineStatusBuilding, PipelineStatusInProgress}

// Pipeline state and step state names.
const (
	StateParsing    = "PARSING"
	StatePending    = "PENDING"
	StateReady      = "READY"
	StateInProgress = "IN_PROGRESS"
	StateCompleted  = "COMPLETED"
	StagePaused     = "PAUSED"
	StageHalted     = "HALTED"
)

// QueueReader is what the queue signal needs from Bitbucket. It is an
// interface so the signal can be refined (or fed from webhooks) without
// touching the runner client.
type QueueReader interface {
	ListPipelines(ctx context.Context, workspace, repo string, statuses ...string) ([]Pipeline, error)
	ListSteps(ctx context.Context, workspace, repo, pipelineUUID string) ([]Step, error)
	GetFile(ctx context.Context, workspace, repo, commit, path string) ([]byte, error)
}

var _ QueueReader = (*Client)(nil)

// NamedState is a {name, type} pair: a state's stage or result.
type NamedState struct {
	Name string
	Type string
}

// PipelineState is a pipeline's state: PENDING, IN_PROGRESS (with Stage
// RUNNING, PAUSED or HALTED) or COMPLETED (with Result).
type PipelineState struct {
	Name   string
	Type   string
	Stage  *NamedState
	Result *NamedState
}

// PipelineTarget is what a pipeline runs for.
type PipelineTarget struct {
	Type            string // pipeline_ref_target, pipeline_commit_target, pipeline_pullrequest_target
	RefType         string // branch, tag, named_branch, bookmark
	RefName         string
	Commit          string // commit hash
	SelectorType    string // default, branches, tags, custom, pull-requests
	SelectorPattern string
}

// Pipeline is one pipeline run.
type Pipeline struct {
	UUID        string
	BuildNumber int
	CreatedOn   time.Time
	CompletedOn time.Time // zero while running
	State       PipelineState
	Target      PipelineTarget
}

// StepState is a step's state: PENDING (Stage PENDING or PAUSED), READY,
// IN_PROGRESS, COMPLETED (with Result).
type StepState struct {
	Name   string
	Type   string
	Stage  *NamedState
	Result *NamedState
}

// Step is one step of a pipeline.
type Step struct {
	UUID              string
	Name              string
	State             StepState
	StartedOn         time.Time // zero until a runner picked it up
	CompletedOn       time.Time
	RunNumber         int
	DurationInSeconds int
	Image             string
}

// Waiting reports a step that is queued for a runner: PENDING or READY (but
// not a paused manual step), or IN_PROGRESS that has not started yet.
func (s Step) Waiting() bool {
	switch s.State.Name {
	case StatePending:
		return s.State.Stage == nil || s.State.Stage.Name != StagePaused
	case StateReady:
		return true
	case StateInProgress:
		return s.StartedOn.IsZero()
	}
	return false
}

// Running reports a pipeline that is not finished.
func (p Pipeline) Running() bool {
	return p.State.Name != StateCompleted && p.CompletedOn.IsZero()
}

type wireNamedState struct {
	Name flexString `json:"name"`
	Type flexString `json:"type"`
}

type wireState struct {
	Name   flexString      `json:"name"`
	Type   flexString      `json:"type"`
	Stage  json.RawMessage `json:"stage"`
	Result json.RawMessage `json:"result"`
}

func decodeNamedState(raw json.RawMessage) *NamedState {
	var w wireNamedState
	if !flexObject(raw, &w) {
		return nil
	}
	return &NamedState{Name: string(w.Name), Type: string(w.Type)}
}

func decodeState(raw json.RawMessage) (name, typ string, stage, result *NamedState) {
	var w wireState
	if !flexObject(raw, &w) {
		return "", "", nil, nil
	}
	return string(w.Name), string(w.Type), decodeNamedState(w.Stage), decodeNamedState(w.Result)
}

type wirePipeline struct {
	UUID        flexString      `json:"uuid"`
	BuildNumber flexInt         `json:"build_number"`
	CreatedOn   flexTime        `json:"created_on"`
	CompletedOn flexTime        `json:"completed_on"`
	State       json.RawMessage `json:"state"`
	Target      json.RawMessage `json:"target"`
}

type wireTarget struct {
	Type     flexString      `json:"type"`
	RefType  flexString      `json:"ref_type"`
	RefName  flexString      `json:"ref_name"`
	Commit   json.RawMessage `json:"commit"`
	Selector json.RawMessage `json:"selector"`
}

func decodePipeline(data []byte) (Pipeline, error) {
	var w wirePipeline
	if !flexObject(data, &w) {
		return Pipeline{}, errors.New("pipeline is not a JSON object")
	}
	p := Pipeline{
		UUID:        string(w.UUID),
		BuildNumber: int(w.BuildNumber),
		CreatedOn:   w.CreatedOn.Time,
		CompletedOn: w.CompletedOn.Time,
	}
	p.State.Name, p.State.Type, p.State.Stage, p.State.Result = decodeState(w.State)
	var t wireTarget
	if flexObject(w.Target, &t) {
		p.Target = PipelineTarget{Type: string(t.Type), RefType: string(t.RefType), RefName: string(t.RefName)}
		var commit struct {
			Hash flexString `json:"hash"`
		}
		if flexObject(t.Commit, &commit) {
			p.Target.Commit = string(commit.Hash)
		}
		var selector struct {
			Type    flexString `json:"type"`
			Pattern flexString `json:"pattern"`
		}
		if flexObject(t.Selector, &selector) {
			p.Target.SelectorType, p.Target.SelectorPattern = string(selector.Type), string(selector.Pattern)
		}
	}
	return p, nil
}

type wireStep struct {
	UUID              flexString      `json:"uuid"`
	Name              flexString      `json:"name"`
	State             json.RawMessage `json:"state"`
	StartedOn         flexTime        `json:"started_on"`
	CompletedOn       flexTime        `json:"completed_on"`
	RunNumber         flexInt         `json:"run_number"`
	DurationInSeconds flexInt         `json:"duration_in_seconds"`
	Image             json.RawMessage `json:"image"`
}

func decodeStep(data []byte) (Step, error) {
	var w wireStep
	if !flexObject(data, &w) {
		return Step{}, errors.New("step is not a JSON object")
	}
	s := Step{
		UUID:              string(w.UUID),
		Name:              string(w.Name),
		StartedOn:         w.StartedOn.Time,
		CompletedOn:       w.CompletedOn.Time,
		RunNumber:         int(w.RunNumber),
		DurationInSeconds: int(w.DurationInSeconds),
	}
	s.State.Name, s.State.Type, s.State.Stage, s.State.Result = decodeState(w.State)
	var image struct {
		Name flexString `json:"name"`
	}
	if flexObject(w.Image, &image) {
		s.Image = string(image.Name)
	} else {
		s.Image = scalarText(w.Image)
	}
	return s, nil
}

// ListPipelines returns the repository's pipelines, newest first, filtered by
// status (none: all). It reads at most MaxPipelinePages pages of 100: the
// queue signal wants the recent ones and every page costs budget.
func (c *Client) ListPipelines(ctx context.Context, workspace, repo string, statuses ...string) ([]Pipeline, error) {
	if err := validateRepoArgs(workspace, repo); err != nil {
		return nil, fmt.Errorf("list pipelines: %w", err)
	}
	query := url.Values{"pagelen": {"100"}, "sort": {"-created_on"}}
	for _, s := range statuses {
		query.Add("status", s)
	}
	first := c.apiURL(query, "2.0", "repositories", normalizeUUID(workspace), normalizeUUID(repo), "pipelines", "")
	var pipelines []Pipeline
	truncated, err := c.listPages(ctx, "pipelines.list", first, c.maxPipelinePages, appendDecoded(&pipelines, decodePipeline))
	if err != nil {
		return nil, fmt.Errorf("list pipelines of %s/%s: %w", workspace, repo, err)
	}
	if truncated {
		c.log.V(1).Info("pipeline list truncated", "workspace", workspace, "repository", repo, "pages", c.maxPipelinePages)
	}
	return pipelines, nil
}

// ListSteps returns every step of a pipeline (at most 100 by Bitbucket's
// limit, so normally one page).
func (c *Client) ListSteps(ctx context.Context, workspace, repo, pipelineUUID string) ([]Step, error) {
	if err := validateRepoArgs(workspace, repo); err != nil {
		return nil, fmt.Errorf("list steps: %w", err)
	}
	if pipelineUUID == "" {
		return nil, errors.New("list steps: empty pipeline UUID")
	}
	first := c.apiURL(url.Values{"pagelen": {"100"}},
		"2.0", "repositories", normalizeUUID(workspace), normalizeUUID(repo), "pipelines", normalizeUUID(pipelineUUID), "steps", "")
	var steps []Step
	_, err := c.listPages(ctx, "pipelines.steps", first, maxListPages, appendDecoded(&steps, decodeStep))
	if err != nil {
		return nil, fmt.Errorf("list steps of pipeline %s in %s/%s: %w", pipelineUUID, workspace, repo, err)
	}
	return steps, nil
}

// GetFile returns the raw content of path at commit, e.g.
// GetFile(ctx, ws, repo, hash, "bitbucket-pipelines.yml").
func (c *Client) GetFile(ctx context.Context, workspace, repo, commit, path string) ([]byte, error) {
	if err := validateRepoArgs(workspace, repo); err != nil {
		return nil, fmt.Errorf("get file: %w", err)
	}
	path = strings.Trim(path, "/")
	if commit == "" || path == "" {
		return nil, errors.New("get file: need a commit and a path")
	}
	segments := append([]string{"2.0", "repositories", normalizeUUID(workspace), normalizeUUID(repo), "src", commit},
		strings.Split(path, "/")...)
	resp, err := c.do(ctx, apiRequest{
		method: http.MethodGet, endpoint: "src.get", accept: "*/*", maxBody: maxFileBody,
		url: c.apiURL(nil, segments...),
	})
	if err != nil {
		return nil, fmt.Errorf("get %s at %s in %s/%s: %w", path, commit, workspace, repo, err)
	}
	return resp.body, nil
}

// Workspace is a Bitbucket workspace.
type Workspace struct {
	UUID string
	Slug string
	Name string
}

// Repository is a Bitbucket repository.
type Repository struct {
	UUID        string
	Slug        string
	Name        string
	FullName    string
	Description string
	ProjectUUID string
	ProjectKey  string
	UpdatedOn   time.Time
}

type wireWorkspace struct {
	UUID flexString `json:"uuid"`
	Slug flexString `json:"slug"`
	Name flexString `json:"name"`
}

type wireRepository struct {
	UUID        flexString      `json:"uuid"`
	Slug        flexString      `json:"slug"`
	Name        flexString      `json:"name"`
	FullName    flexString      `json:"full_name"`
	Description flexString      `json:"description"`
	Project     json.RawMessage `json:"project"`
	UpdatedOn   flexTime        `json:"updated_on"`
}

func decodeRepository(data []byte) (Repository, error) {
	var w wireRepository
	if !flexObject(data, &w) {
		return Repository{}, errors.New("repository is not a JSON object")
	}
	r := Repository{
		UUID: string(w.UUID), Slug: string(w.Slug), Name: string(w.Name), FullName: string(w.FullName),
		Description: string(w.Description), UpdatedOn: w.UpdatedOn.Time,
	}
	var project struct {
		UUID flexString `json:"uuid"`
		Key  flexString `json:"key"`
	}
	if flexObject(w.Project, &project) {
		r.ProjectUUID, r.ProjectKey = string(project.UUID), string(project.Key)
	}
	return r, nil
}

// GetWorkspace looks a workspace up by slug or UUID (to learn its UUID).
func (c *Client) GetWorkspace(ctx context.Context, workspace string) (*Workspace, error) {
	if normalizeUUID(workspace) == "" {
		return nil, errors.New("get workspace: empty workspace")
	}
	var w wireWorkspace
	if err := c.getJSON(ctx, "workspaces.get", c.apiURL(nil, "2.0", "workspaces", normalizeUUID(workspace)), &w); err != nil {
		return nil, fmt.Errorf("get workspace %s: %w", workspace, err)
	}
	return &Workspace{UUID: string(w.UUID), Slug: string(w.Slug), Name: string(w.Name)}, nil
}

// GetRepository looks a repository up by slug or UUID.
func (c *Client) GetRepository(ctx context.Context, workspace, repo string) (*Repository, error) {
	if err := validateRepoArgs(workspace, repo); err != nil {
		return nil, fmt.Errorf("get repository: %w", err)
	}
	resp, err := c.do(ctx, apiRequest{
		method: http.MethodGet, endpoint: "repositories.get", accept: "application/json",
		url: c.apiURL(nil, "2.0", "repositories", normalizeUUID(workspace), normalizeUUID(repo)),
	})
	if err != nil {
		return nil, fmt.Errorf("get repository %s/%s: %w", workspace, repo, err)
	}
	r, err := decodeRepository(resp.body)
	if err != nil {
		return nil, fmt.Errorf("get repository %s/%s: %w", workspace, repo, err)
	}
	return &r, nil
}

// ListRepositories returns the workspace's repositories, all pages. query is
// a Bitbucket `q` filter (e.g. `project.key="CI"`), empty for all.
func (c *Client) ListRepositories(ctx context.Context, workspace, query string) ([]Repository, error) {
	if normalizeUUID(workspace) == "" {
		return nil, errors.New("list repositories: empty workspace")
	}
	params := url.Values{"pagelen": {"100"}}
	if query != "" {
		params.Set("q", query)
	}
	var repos []Repository
	_, err := c.listPages(ctx, "repositories.list", c.apiURL(params, "2.0", "repositories", normalizeUUID(workspace)), maxListPages,
		appendDecoded(&repos, decodeRepository))
	if err != nil {
		return nil, fmt.Errorf("list repositories of %s: %w", workspace, err)
	}
	return repos, nil
}

func validateRepoArgs(workspace, repo string) error {
	if normalizeUUID(workspace) == "" {
		return errors.New("empty workspace")
	}
	if normalizeUUID(repo) == "" {
		return errors.New("empty repository")
	}
	return nil
}
