package bitbucket

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Scope is where runners live: a workspace, or one repository of it.
type Scope struct {
	Workspace  string // workspace UUID with braces
	Repository string // repository UUID with braces; empty for workspace runners
}

// IsRepository reports a repository scope.
func (s Scope) IsRepository() bool { return s.Repository != "" }

func (s Scope) String() string {
	if s.IsRepository() {
		return "repository " + s.Workspace + "/" + s.Repository
	}
	return "workspace " + s.Workspace
}

// Validate reports a missing workspace.
func (s Scope) Validate() error {
	if normalizeUUID(s.Workspace) == "" {
		return errors.New("scope has no workspace UUID")
	}
	return nil
}

// runnersPath is the undocumented runner API path used by the Atlassian
// autoscaler: /internal/workspaces/{ws}/pipelines-config/runners or
// /internal/repositories/{ws}/{repo}/pipelines-config/runners.
func (s Scope) runnersPath(extra ...string) []string {
	var segments []string
	if s.IsRepository() {
		segments = []string{"internal", "repositories", normalizeUUID(s.Workspace), normalizeUUID(s.Repository)}
	} else {
		segments = []string{"internal", "workspaces", normalizeUUID(s.Workspace)}
	}
	segments = append(segments, "pipelines-config", "runners")
	return append(segments, extra...)
}

// RunnerStatus is state.status of a runner.
type RunnerStatus string

const (
	// RunnerStatusUnregistered: created, no agent has connected yet.
	RunnerStatusUnregistered RunnerStatus = "UNREGISTERED"
	RunnerStatusOnline       RunnerStatus = "ONLINE"
	RunnerStatusOffline      RunnerStatus = "OFFLINE"
	RunnerStatusDisabled     RunnerStatus = "DISABLED"
	// RunnerStatusEnabled is the PUT target that re-enables a runner; whether
	// a GET ever reports it is unconfirmed.
	RunnerStatusEnabled RunnerStatus = "ENABLED"
	// RunnerStatusUnhealthy is what the UI shows after a failed build-dir
	// cleanup; whether the API reports it is unconfirmed.
	RunnerStatusUnhealthy RunnerStatus = "UNHEALTHY"
)

// Runner is a Bitbucket self-hosted runner.
type Runner struct {
	UUID      string
	Name      string
	Labels    []string
	State     RunnerState
	CreatedOn time.Time
	UpdatedOn time.Time
	// OAuthClient is what the agent authenticates with. Its Secret is only
	// ever set in the result of CreateRunner.
	OAuthClient *OAuthClient
}

// RunnerState is the runner's state as Bitbucket reports it.
type RunnerState struct {
	Status RunnerStatus
	// Step is nil while the runner is idle, set while it runs a step.
	Step      *StepRef
	UpdatedOn time.Time
	// Version is the agent version ("1.184"), when reported.
	Version string
}

// StepRef is state.step. Its shape is undocumented (the Atlassian autoscaler
// only checks that the key is there), so the raw JSON is kept and the UUIDs
// are filled in when recognisable.
type StepRef struct {
	UUID         string
	PipelineUUID string
	Raw          json.RawMessage
}

// OAuthClient is the runner's own OAuth client, used by the agent.
type OAuthClient struct {
	ID            string
	Secret        string
	TokenEndpoint string
	Audience      string
}

// String keeps the secret out of fmt output, including when a Runner is
// printed with %v or %+v.
func (o OAuthClient) String() string {
	secret := ""
	if o.Secret != "" {
		secret = "[REDACTED]"
	}
	return fmt.Sprintf("{ID:%s Secret:%s TokenEndpoint:%s Audience:%s}", o.ID, secret, o.TokenEndpoint, o.Audience)
}

// GoString keeps the secret out of %#v.
func (o OAuthClient) GoString() string { return "bitbucket.OAuthClient" + o.String() }

// MarshalLog keeps the secret out of structured logs (logr.Marshaler).
func (o OAuthClient) MarshalLog() any { return o.String() }

// MarshalLog logs a runner without its OAuth secret.
func (r Runner) MarshalLog() any {
	out := struct {
		UUID, Name string
		Labels     []string
		Status     RunnerStatus
		Busy       bool
		UpdatedOn  time.Time
	}{r.UUID, r.Name, r.Labels, r.State.Status, r.Busy(), r.State.UpdatedOn}
	return out
}

// Busy reports that the runner is running a step (state.step present).
func (r Runner) Busy() bool { return r.State.Step != nil }

// StepID identifies the step a runner runs: "" when it is idle, "unknown" when Bitbucket shows a
// step without its UUID.
func (r Runner) StepID() string {
	if r.State.Step == nil {
		return ""
	}
	if r.State.Step.UUID != "" {
		return r.State.Step.UUID
	}
	return "unknown"
}

// Online reports an ONLINE runner, busy or not.
func (r Runner) Online() bool { return r.State.Status == RunnerStatusOnline }

// Idle reports an ONLINE runner that runs no step: it can take one now.
func (r Runner) Idle() bool { return r.Online() && !r.Busy() }

// HasLabel reports whether the runner carries label.
func (r Runner) HasLabel(label string) bool {
	for _, l := range r.Labels {
		if l == label {
			return true
		}
	}
	return false
}

type wireRunner struct {
	UUID        flexString      `json:"uuid"`
	Name        flexString      `json:"name"`
	Labels      flexStrings     `json:"labels"`
	State       json.RawMessage `json:"state"`
	CreatedOn   flexTime        `json:"created_on"`
	UpdatedOn   flexTime        `json:"updated_on"`
	OAuthClient json.RawMessage `json:"oauth_client"`
	Version     json.RawMessage `json:"version"`
}

type wireRunnerState struct {
	Status    flexString      `json:"status"`
	Step      json.RawMessage `json:"step"`
	UpdatedOn flexTime        `json:"updated_on"`
	Version   json.RawMessage `json:"version"`
}

type wireOAuthClient struct {
	ID            flexString `json:"id"`
	Secret        flexString `json:"secret"`
	TokenEndpoint flexString `json:"token_endpoint"`
	Audience      flexString `json:"audience"`
}

// decodeRunner is tolerant: unknown fields are ignored, `state.step` may be
// an object, a string or null, `version` a string or {"current": ...}. It
// fails only when the document is not a JSON object or has no uuid.
func decodeRunner(data []byte) (Runner, error) {
	var w wireRunner
	if !flexObject(data, &w) {
		return Runner{}, errors.New("runner is not a JSON object")
	}
	if w.UUID == "" {
		return Runner{}, errors.New("runner has no uuid")
	}
	r := Runner{
		UUID:      string(w.UUID),
		Name:      string(w.Name),
		Labels:    []string(w.Labels),
		CreatedOn: w.CreatedOn.Time,
		UpdatedOn: w.UpdatedOn.Time,
	}
	var state wireRunnerState
	if flexObject(w.State, &state) {
		r.State = RunnerState{
			Status:    RunnerStatus(state.Status),
			Step:      decodeStepRef(state.Step),
			UpdatedOn: state.UpdatedOn.Time,
			Version:   decodeVersion(state.Version),
		}
	}
	if r.State.Version == "" {
		r.State.Version = decodeVersion(w.Version)
	}
	var oc wireOAuthClient
	if flexObject(w.OAuthClient, &oc) {
		r.OAuthClient = &OAuthClient{
			ID:            string(oc.ID),
			Secret:        string(oc.Secret),
			TokenEndpoint: string(oc.TokenEndpoint),
			Audience:      string(oc.Audience),
		}
	}
	return r, nil
}

// decodeStepRef: absent or null means idle; any other value means busy.
func decodeStepRef(raw json.RawMessage) *StepRef {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	ref := &StepRef{Raw: append(json.RawMessage(nil), raw...)}
	var obj struct {
		UUID         flexString      `json:"uuid"`
		StepUUID     flexString      `json:"step_uuid"`
		PipelineUUID flexString      `json:"pipeline_uuid"`
		Pipeline     json.RawMessage `json:"pipeline"`
	}
	if flexObject(raw, &obj) {
		ref.UUID = string(obj.UUID)
		if ref.UUID == "" {
			ref.UUID = string(obj.StepUUID)
		}
		ref.PipelineUUID = string(obj.PipelineUUID)
		var pipeline struct {
			UUID flexString `json:"uuid"`
		}
		if ref.PipelineUUID == "" && flexObject(obj.Pipeline, &pipeline) {
			ref.PipelineUUID = string(pipeline.UUID)
		}
		return ref
	}
	ref.UUID = scalarText(raw)
	return ref
}

func decodeVersion(raw json.RawMessage) string {
	var obj struct {
		Current flexString `json:"current"`
	}
	if flexObject(raw, &obj) {
		return string(obj.Current)
	}
	return scalarText(raw)
}

// ListRunners returns every runner of the scope, following `next` links.
func (c *Client) ListRunners(ctx context.Context, s Scope) ([]Runner, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("list runners: %w", err)
	}
	var runners []Runner
	first := c.apiURL(url.Values{"pagelen": {"100"}}, s.runnersPath()...)
	_, err := c.listPages(ctx, "runners.list", first, maxListPages, appendDecoded(&runners, decodeRunner))
	if err != nil {
		return nil, fmt.Errorf("list runners in %s: %w", s, err)
	}
	return runners, nil
}

// GetRunner returns one runner; a missing runner is an error matching
// ErrNotFound.
func (c *Client) GetRunner(ctx context.Context, s Scope, uuid string) (*Runner, error) {
	if err := validateRunnerArgs(s, uuid); err != nil {
		return nil, fmt.Errorf("get runner: %w", err)
	}
	resp, err := c.do(ctx, apiRequest{
		method: http.MethodGet, endpoint: "runners.get", accept: "application/json",
		url: c.apiURL(nil, s.runnersPath(normalizeUUID(uuid))...),
	})
	if err != nil {
		return nil, fmt.Errorf("get runner %s in %s: %w", uuid, s, err)
	}
	r, err := decodeRunner(resp.body)
	if err != nil {
		return nil, fmt.Errorf("get runner %s in %s: decode: %w", uuid, s, err)
	}
	return &r, nil
}

// CreateRunner registers a runner and returns it with its OAuth client,
// including the secret, which Bitbucket shows only this once. The call is
// never resent once Bitbucket may have seen it, so on an ambiguous failure
// (timeout, 5xx) the runner may exist: look it up by name before creating
// again. If Bitbucket answers without a secret, the runner is returned
// together with an error matching ErrNoRunnerSecret so it can be deleted.
func (c *Client) CreateRunner(ctx context.Context, s Scope, name string, labels []string) (*Runner, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("create runner %s: %w", name, err)
	}
	if name == "" {
		return nil, errors.New("create runner: empty name")
	}
	if labels == nil {
		labels = []string{}
	}
	body, err := json.Marshal(struct {
		Name   string   `json:"name"`
		Labels []string `json:"labels"`
	}{name, labels})
	if err != nil {
		return nil, fmt.Errorf("create runner %s: encode: %w", name, err)
	}
	resp, err := c.do(ctx, apiRequest{
		method: http.MethodPost, endpoint: "runners.create", accept: "application/json",
		url: c.apiURL(nil, s.runnersPath()...), body: body,
	})
	if err != nil {
		return nil, fmt.Errorf("create runner %s in %s: %w", name, s, err)
	}
	r, err := decodeRunner(resp.body)
	if err != nil {
		return nil, fmt.Errorf("create runner %s in %s: decode response (the runner may exist): %w", name, s, err)
	}
	if r.OAuthClient == nil || r.OAuthClient.Secret == "" {
		return &r, fmt.Errorf("create runner %s in %s: runner %s: %w", name, s, r.UUID, ErrNoRunnerSecret)
	}
	return &r, nil
}

// SetRunnerState enables or disables a runner. A disabled runner takes no new
// step, which makes it safe to delete once it is idle.
func (c *Client) SetRunnerState(ctx context.Context, s Scope, uuid string, status RunnerStatus) error {
	if err := validateRunnerArgs(s, uuid); err != nil {
		return fmt.Errorf("set runner state: %w", err)
	}
	if status != RunnerStatusEnabled && status != RunnerStatusDisabled {
		return fmt.Errorf("set runner %s state: %q is not a settable status (ENABLED or DISABLED)", uuid, status)
	}
	body, _ := json.Marshal(map[string]string{"status": string(status)})
	_, err := c.do(ctx, apiRequest{
		method: http.MethodPut, endpoint: "runners.state", accept: "application/json",
		url: c.apiURL(nil, s.runnersPath(normalizeUUID(uuid), "state")...), body: body,
	})
	if err != nil {
		return fmt.Errorf("set runner %s in %s to %s: %w", uuid, s, status, err)
	}
	return nil
}

// DeleteRunner removes a runner. A runner that is already gone is an error
// matching ErrNotFound; callers that only want it gone ignore IsNotFound (a
// retried DELETE whose first attempt succeeded also ends that way).
func (c *Client) DeleteRunner(ctx context.Context, s Scope, uuid string) error {
	if err := validateRunnerArgs(s, uuid); err != nil {
		return fmt.Errorf("delete runner: %w", err)
	}
	_, err := c.do(ctx, apiRequest{
		method: http.MethodDelete, endpoint: "runners.delete", accept: "application/json",
		url: c.apiURL(nil, s.runnersPath(normalizeUUID(uuid))...),
	})
	if err != nil {
		return fmt.Errorf("delete runner %s in %s: %w", uuid, s, err)
	}
	return nil
}

func validateRunnerArgs(s Scope, uuid string) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if normalizeUUID(uuid) == "" {
		return errors.New("empty runner UUID")
	}
	return nil
}

// RunnerAPI is the runner half of Client, for code that wants to swap in a
// fake.
type RunnerAPI interface {
	ListRunners(ctx context.Context, s Scope) ([]Runner, error)
	GetRunner(ctx context.Context, s Scope, uuid string) (*Runner, error)
	CreateRunner(ctx context.Context, s Scope, name string, labels []string) (*Runner, error)
	SetRunnerState(ctx context.Context, s Scope, uuid string, status RunnerStatus) error
	DeleteRunner(ctx context.Context, s Scope, uuid string) error
}

var _ RunnerAPI = (*Client)(nil)
