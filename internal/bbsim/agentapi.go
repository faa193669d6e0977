package bbsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// The agent API serves runner agents that really run: the runner stand-in of
// the real-node tests (test/images/runner-standin). Atlassian's runner talks
// to Bitbucket over a private protocol, so these paths are bbsim's own, under
// a prefix no Bitbucket path has (docs/adr/0015-runner-standin.md):
//
//	POST /oauth/token                                    the runner's client credentials grant
//	POST /_agent/v1/runners/{runner}/connect             {"account_uuid","repository_uuid","agent_version"}
//	POST /_agent/v1/runners/{runner}/heartbeat
//	GET  /_agent/v1/runners/{runner}/step                the step assigned to the runner, or 204
//	POST /_agent/v1/runners/{runner}/steps/{step}/complete  {"result","exit_code","log"}
//	POST /_agent/v1/runners/{runner}/disconnect
//
// Every call but the token's carries the runner's bearer token. A runner held
// by a real agent goes OFFLINE when its heartbeats stop for agentHeartbeatTimeout,
// and its steps end when the agent reports them, not after a duration.
const (
	agentPrefix     = "/_agent/"
	runnerTokenPath = "/oauth/token"
)

const (
	agentHeartbeatInterval = 2 * time.Second
	// Three missed heartbeats and a little: a busy node must not flap a runner.
	agentHeartbeatTimeout = 3*agentHeartbeatInterval + time.Second
	// maxStepLog bounds the log kept per step.
	maxStepLog = 1 << 20
)

// AgentConnectRequest is the body of the connect call.
type AgentConnectRequest struct {
	AccountUUID    string `json:"account_uuid"`
	RepositoryUUID string `json:"repository_uuid,omitempty"`
	AgentVersion   string `json:"agent_version"`
}

// AgentConnectResponse tells the agent how often to heartbeat.
type AgentConnectResponse struct {
	HeartbeatIntervalSeconds int `json:"heartbeat_interval_seconds"`
}

// AgentHeartbeatResponse is the runner's status as Bitbucket shows it.
type AgentHeartbeatResponse struct {
	Status string `json:"status"`
}

// AgentStep is a step as an agent runs it: a script in an image, with files to
// write into its build directory first. An empty Image is the agent's default.
type AgentStep struct {
	UUID           string            `json:"uuid"`
	Name           string            `json:"name"`
	Image          string            `json:"image,omitempty"`
	Script         string            `json:"script"`
	Files          map[string]string `json:"files,omitempty"`
	TimeoutSeconds int               `json:"timeout_seconds,omitempty"`
}

// AgentStepResult is the body of the complete call.
type AgentStepResult struct {
	Result   string `json:"result"`
	ExitCode int    `json:"exit_code"`
	Log      string `json:"log"`
}

func (s *Server) agentRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+runnerTokenPath, s.handleRunnerToken)
	base := "/_agent/v1/runners/{runner}"
	mux.Handle("POST "+base+"/connect", s.agentAPI(s.handleAgentConnect))
	mux.Handle("POST "+base+"/heartbeat", s.agentAPI(s.handleAgentHeartbeat))
	mux.Handle("GET "+base+"/step", s.agentAPI(s.handleAgentStep))
	mux.Handle("POST "+base+"/steps/{step}/complete", s.agentAPI(s.handleAgentComplete))
	mux.Handle("POST "+base+"/disconnect", s.agentAPI(s.handleAgentDisconnect))
}

// handleRunnerToken is the runner's identity provider (runnerTokenEndpoint's
// path): it grants a token to a runner's own OAuth client, which only the
// agent API accepts.
func (s *Server) handleRunnerToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "Malformed token request")
		return
	}
	clientID, secret, ok := r.BasicAuth()
	if !ok {
		clientID, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if grant := r.PostForm.Get("grant_type"); grant != "client_credentials" {
		writeErrorDetail(w, http.StatusBadRequest, "Unsupported grant type", fmt.Sprintf("grant_type %q is not supported", grant))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var owner *runner
	for _, rn := range s.runnerOrder {
		if clientID != "" && rn.clientID == clientID && equalSecret(rn.clientSecret, secret) {
			owner = rn
			break
		}
	}
	if owner == nil {
		s.tokenRequests["rejected"]++
		writeError(w, http.StatusUnauthorized, "Invalid OAuth client credentials")
		return
	}
	s.tokenRequests["runner:"+owner.uuid]++
	access := randomToken(24)
	s.tokens[access] = &issuedToken{consumer: "runner:" + owner.uuid, runner: owner.uuid, expires: s.now().Add(s.opts.TokenTTL)}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": access, "token_type": "bearer", "expires_in": int(s.opts.TokenTTL / time.Second),
		"audience": runnerAudience,
	})
}

// agentAPI authenticates a runner's token for the runner of the path and
// passes the runner to h, with s.mu held.
func (s *Server) agentAPI(h func(w http.ResponseWriter, r *http.Request, rn *runner)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.countCallLocked("agent", endpointName(r))
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		issued := s.tokens[token]
		switch {
		case !strings.EqualFold(scheme, "Bearer") || issued == nil || issued.runner == "":
			writeError(w, http.StatusUnauthorized, "A runner's access token is required")
			return
		case !s.now().Before(issued.expires):
			writeError(w, http.StatusUnauthorized, "Access token expired.")
			return
		case !sameID(issued.runner, r.PathValue("runner")):
			writeError(w, http.StatusForbidden, "The token belongs to another runner")
			return
		}
		rn := s.runners[issued.runner]
		if rn == nil {
			writeError(w, http.StatusNotFound, fmt.Sprintf("Runner %s not found", issued.runner))
			return
		}
		h(w, r, rn)
	})
}

func (s *Server) handleAgentConnect(w http.ResponseWriter, r *http.Request, rn *runner) {
	var req AgentConnectRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "Malformed connect request: "+err.Error())
		return
	}
	switch {
	case !sameID(rn.ws.uuid, req.AccountUUID):
		s.refuseAgentLocked(w, rn, http.StatusBadRequest, fmt.Sprintf("%s %s is not the runner's workspace", envAccountUUID, req.AccountUUID))
		return
	case rn.repo != nil && !sameID(rn.repo.uuid, req.RepositoryUUID):
		s.refuseAgentLocked(w, rn, http.StatusBadRequest, fmt.Sprintf("%s %q is not the runner's repository", envRepositoryUUID, req.RepositoryUUID))
		return
	case rn.connected && !rn.realAgent:
		// An emulated agent (a pod on a kwok node) holds the runner.
		s.refuseAgentLocked(w, rn, http.StatusConflict, conflictMessage(rn.uuid))
		return
	}
	// A reconnect of a real agent (after a restart of its container) takes the
	// runner over; a step it was running is lost with the old process.
	if rn.connected && rn.current != nil {
		s.failStepLocked(rn.current, ResultError, "the runner's agent restarted while running the step")
	}
	rn.realAgent = true
	rn.lastHeartbeat = s.now()
	s.connectLocked(rn, "")
	s.needsSchedule = true
	s.kick()
	writeJSON(w, http.StatusOK, AgentConnectResponse{HeartbeatIntervalSeconds: int(agentHeartbeatInterval / time.Second)})
}

func (s *Server) refuseAgentLocked(w http.ResponseWriter, rn *runner, status int, issue string) {
	rn.agentIssue = issue
	s.touchRunnerLocked(rn)
	s.log.Info("runner agent could not connect", "runner", rn.uuid, "issue", issue)
	writeError(w, status, issue)
}

// heldByAgent answers 409 unless the calling agent holds the runner.
func (s *Server) heldByAgentLocked(w http.ResponseWriter, rn *runner) bool {
	if !rn.connected || !rn.realAgent {
		writeError(w, http.StatusConflict, fmt.Sprintf("Runner %s is not connected: connect first", rn.uuid))
		return false
	}
	return true
}

func (s *Server) handleAgentHeartbeat(w http.ResponseWriter, _ *http.Request, rn *runner) {
	if !s.heldByAgentLocked(w, rn) {
		return
	}
	rn.lastHeartbeat = s.now()
	writeJSON(w, http.StatusOK, AgentHeartbeatResponse{Status: rn.status()})
}

func (s *Server) handleAgentStep(w http.ResponseWriter, _ *http.Request, rn *runner) {
	if !s.heldByAgentLocked(w, rn) {
		return
	}
	rn.lastHeartbeat = s.now()
	st := rn.current
	if st == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusOK, st.agentView())
}

func (st *step) agentView() AgentStep {
	script := st.script
	if script == "" {
		// A step enqueued with a duration only: it takes that long.
		script = fmt.Sprintf("sleep %d", int(st.duration.Round(time.Second)/time.Second))
	}
	files := map[string]string{}
	for k, v := range st.files {
		files[k] = v
	}
	return AgentStep{UUID: st.uuid, Name: st.name, Image: st.image, Script: script, Files: files}
}

func (s *Server) handleAgentComplete(w http.ResponseWriter, r *http.Request, rn *runner) {
	var res AgentStepResult
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 2*maxStepLog)).Decode(&res); err != nil {
		writeError(w, http.StatusBadRequest, "Malformed step result: "+err.Error())
		return
	}
	switch res.Result {
	case ResultSuccessful, ResultFailed, ResultError:
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("result %q is not one of %s, %s, %s", res.Result, ResultSuccessful, ResultFailed, ResultError))
		return
	}
	st := s.steps[braced(r.PathValue("step"))]
	if st == nil || st.runnerUUID != rn.uuid {
		writeError(w, http.StatusNotFound, fmt.Sprintf("Step %s is not the runner's", r.PathValue("step")))
		return
	}
	if st.phase == phaseDone {
		// A retried report of a step already ended (or failed by a disconnect).
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if len(res.Log) > maxStepLog {
		res.Log = res.Log[len(res.Log)-maxStepLog:]
	}
	now := s.now()
	st.log, st.exitCode, st.reported = res.Log, res.ExitCode, true
	rn.lastHeartbeat = now
	if rn.current == st {
		rn.current = nil
		rn.idleSince = now
		if res.Result == ResultSuccessful {
			rn.stepsCompleted++
		}
		s.touchRunnerLocked(rn)
	}
	reason := ""
	if res.Result != ResultSuccessful {
		reason = fmt.Sprintf("exit code %d", res.ExitCode)
	}
	s.finishStepLocked(st, res.Result, reason, now)
	s.kick()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleAgentDisconnect(w http.ResponseWriter, _ *http.Request, rn *runner) {
	if rn.connected && rn.realAgent {
		s.disconnectLocked(rn, "agent disconnected")
	}
	w.WriteHeader(http.StatusNoContent)
}

// expireAgentsLocked takes runners whose real agent stopped heartbeating OFFLINE.
func (s *Server) expireAgentsLocked(now time.Time) {
	for _, rn := range s.runnerOrder {
		if rn.connected && rn.realAgent && now.Sub(rn.lastHeartbeat) > agentHeartbeatTimeout {
			s.disconnectLocked(rn, "agent heartbeats stopped")
			s.needsSchedule = true
		}
	}
}
