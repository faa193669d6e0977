package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Wire types of bbsim's agent API, kept here on purpose rather than imported:
// like the operator's client, the stand-in must not share a misunderstanding
// of the wire format with the simulator.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
}

type connectRequest struct {
	AccountUUID    string `json:"account_uuid"`
	RepositoryUUID string `json:"repository_uuid,omitempty"`
	AgentVersion   string `json:"agent_version"`
}

type connectResponse struct {
	HeartbeatIntervalSeconds int `json:"heartbeat_interval_seconds"`
}

type stepJSON struct {
	UUID           string            `json:"uuid"`
	Image          string            `json:"image"`
	Script         string            `json:"script"`
	Files          map[string]string `json:"files,omitempty"`
	TimeoutSeconds int               `json:"timeout_seconds,omitempty"`
}

type stepResult struct {
	Result   string `json:"result"` // SUCCESSFUL, FAILED or ERROR
	ExitCode int    `json:"exit_code"`
	Log      string `json:"log"`
}

const agentVersion = "runner-standin/1"

type agentClient struct {
	cfg  config
	http *http.Client

	mu      sync.Mutex
	token   string
	expires time.Time
}

func newAgentClient(cfg config) *agentClient {
	return &agentClient{cfg: cfg, http: &http.Client{Timeout: 30 * time.Second}}
}

func (a *agentClient) runnerPath(suffix string) string {
	return strings.TrimRight(a.cfg.baseURL, "/") + "/_agent/v1/runners/" +
		url.PathEscape(strings.Trim(a.cfg.runnerUUID, "{}")) + suffix
}

// accessToken returns a valid token, asking the token endpoint with the
// runner's client credentials when the last one is close to expiring.
func (a *agentClient) accessToken(ctx context.Context) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token != "" && time.Until(a.expires) > time.Minute {
		return a.token, nil
	}
	form := url.Values{"grant_type": {"client_credentials"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(a.cfg.baseURL, "/")+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(a.cfg.clientID, a.cfg.clientSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var tok tokenResponse
	if err := a.do(req, &tok); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	a.token, a.expires = tok.AccessToken, time.Now().Add(time.Duration(tok.ExpiresIn)*time.Second)
	return a.token, nil
}

// call sends a JSON request with the runner's token and decodes a JSON answer
// into out (nil: ignore it). It reports whether the answer had a body.
func (a *agentClient) call(ctx context.Context, method, path string, in, out any) (bool, error) {
	tok, err := a.accessToken(ctx)
	if err != nil {
		return false, err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return false, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.runnerPath(path), body)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusUnauthorized {
		// A token bbsim forgot (Reset keeps tokens, but a restart does not).
		a.mu.Lock()
		a.token = ""
		a.mu.Unlock()
	}
	if resp.StatusCode >= 300 {
		return false, &statusError{status: resp.StatusCode, msg: fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))}
	}
	if resp.StatusCode == http.StatusNoContent || len(b) == 0 || out == nil {
		return false, nil
	}
	return true, json.Unmarshal(b, out)
}

// statusError is an answer of the agent API other than 2xx.
type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return e.msg }

func (a *agentClient) do(req *http.Request, out any) error {
	resp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, out)
}

// connect registers the agent as its runner's, retrying until bbsim answers
// or ctx ends, and returns the heartbeat interval bbsim asks for.
func (a *agentClient) connect(ctx context.Context) (time.Duration, error) {
	req := connectRequest{AccountUUID: a.cfg.accountUUID, RepositoryUUID: a.cfg.repositoryUUID, AgentVersion: agentVersion}
	for attempt := 0; ; attempt++ {
		var resp connectResponse
		_, err := a.call(ctx, http.MethodPost, "/connect", req, &resp)
		if err == nil {
			return max(time.Second, time.Duration(resp.HeartbeatIntervalSeconds)*time.Second), nil
		}
		if attempt >= 5 {
			return 0, err
		}
		log.Printf("connect: %v (retrying)", err)
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * time.Second):
		}
	}
}

func (a *agentClient) heartbeatLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := a.call(ctx, http.MethodPost, "/heartbeat", struct{}{}, nil)
		if err == nil || ctx.Err() != nil {
			continue
		}
		log.Printf("heartbeat: %v", err)
		// 409: bbsim took the runner OFFLINE (heartbeats late, or the
		// simulator disconnected it); a runner connects again.
		var se *statusError
		if errors.As(err, &se) && se.status == http.StatusConflict {
			if _, err := a.connect(ctx); err != nil && ctx.Err() == nil {
				log.Printf("reconnect: %v", err)
			} else if err == nil {
				log.Print("reconnected")
			}
		}
	}
}

// nextStep returns the step bbsim assigned to this runner, or nil.
func (a *agentClient) nextStep(ctx context.Context) (*stepJSON, error) {
	var st stepJSON
	found, err := a.call(ctx, http.MethodGet, "/step", nil, &st)
	if err != nil || !found {
		return nil, err
	}
	return &st, nil
}

// complete reports a step's end, retrying for a while: a lost report would
// leave the step running in bbsim for ever.
func (a *agentClient) complete(ctx context.Context, stepUUID string, res stepResult) error {
	var err error
	for attempt := range 5 {
		if _, err = a.call(ctx, http.MethodPost, "/steps/"+url.PathEscape(strings.Trim(stepUUID, "{}"))+"/complete", res, nil); err == nil {
			return nil
		}
		time.Sleep(time.Duration(attempt+1) * time.Second)
	}
	return err
}

func (a *agentClient) disconnect(ctx context.Context) error {
	_, err := a.call(ctx, http.MethodPost, "/disconnect", struct{}{}, nil)
	return err
}
