package bbsim

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Step results (pipeline_step_state_completed_*).
const (
	ResultSuccessful = "SUCCESSFUL"
	ResultFailed     = "FAILED"
	ResultError      = "ERROR"
)

// ReasonNoMatch is recorded on steps failed because no ONLINE runner carries
// their labels (NoMatch "fail", the behaviour older Bitbucket docs describe).
const ReasonNoMatch = "no online runner matches"

// Pipelines hold at most 100 steps in Bitbucket.
const maxStepsPerPipeline = 100

type stepPhase int

const (
	phaseQueued stepPhase = iota
	phaseRunning
	phaseDone
)

func (p stepPhase) String() string {
	switch p {
	case phaseQueued:
		return "queued"
	case phaseRunning:
		return "running"
	}
	return "completed"
}

type step struct {
	uuid        string
	name        string
	runNumber   int
	pipeline    *pipeline
	runsOn      []string
	duration    time.Duration
	phase       stepPhase
	result      string
	reason      string
	runnerUUID  string
	enqueuedAt  time.Time
	startedAt   time.Time
	completedAt time.Time

	// What a real agent runs (agent API); a step without a script sleeps for its duration.
	script   string
	image    string
	files    map[string]string
	log      string
	exitCode int
	reported bool // a real agent reported the step's end
}

type pipeline struct {
	uuid        string
	repo        *repository
	buildNumber int
	commit      string
	refName     string
	createdOn   time.Time
	steps       []*step
	startSent   bool
	finishSent  bool
}

// EnqueueRequest adds steps that wait for a self-hosted runner.
type EnqueueRequest struct {
	Count      int
	RunsOn     []string // default self.hosted, linux
	Duration   time.Duration
	Workspace  string // UUID or slug; empty = first workspace
	Repository string // UUID or slug; empty = first repository of the workspace
	// StepsPerPipeline groups the steps into pipelines of this many parallel
	// steps; 0 puts up to 100 (Bitbucket's per-pipeline maximum) in each.
	StepsPerPipeline int
	// Script, Image and Files are what a real agent runs (the agent API):
	// Script in Image (empty: the agent's default image), in a build directory
	// holding Files (relative path -> content). Emulated agents ignore them.
	Script string
	Image  string
	Files  map[string]string
}

// maxEnqueue keeps a typo in a benchmark from allocating without bound.
const maxEnqueue = 100000

// Enqueue creates pipelines whose steps wait for runners carrying all RunsOn
// labels, and returns the step UUIDs in queue order.
func (s *Server) Enqueue(req EnqueueRequest) ([]string, error) {
	if req.Count < 1 || req.Count > maxEnqueue {
		return nil, fmt.Errorf("enqueue: count must be between 1 and %d, got %d", maxEnqueue, req.Count)
	}
	if req.Duration < 0 {
		return nil, fmt.Errorf("enqueue: negative duration %s", req.Duration)
	}
	runsOn := slices.Clone(req.RunsOn)
	if len(runsOn) == 0 {
		runsOn = []string{labelSelfHosted, "linux"}
	}
	for _, l := range runsOn {
		if !labelPattern.MatchString(l) {
			return nil, fmt.Errorf("enqueue: invalid runs-on label %q", l)
		}
	}
	perPipeline := req.StepsPerPipeline
	if perPipeline <= 0 || perPipeline > maxStepsPerPipeline {
		perPipeline = maxStepsPerPipeline
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	repo, err := s.enqueueTargetLocked(req.Workspace, req.Repository)
	if err != nil {
		return nil, err
	}
	now := s.now()
	var ids []string
	for remaining := req.Count; remaining > 0; remaining -= perPipeline {
		p := s.newPipelineLocked(repo, now)
		for range min(remaining, perPipeline) {
			s.stepSerial++
			st := &step{
				uuid: newUUID(), name: fmt.Sprintf("Build %d", len(p.steps)+1), runNumber: 1,
				pipeline: p, runsOn: runsOn, duration: req.Duration, enqueuedAt: now,
				script: req.Script, image: req.Image, files: maps.Clone(req.Files),
			}
			p.steps = append(p.steps, st)
			s.steps[st.uuid] = st
			s.stepOrder = append(s.stepOrder, st)
			s.queue = append(s.queue, st)
			ids = append(ids, st.uuid)
		}
		s.emitCommitStatusLocked(p, eventStatusCreated)
	}
	s.needsSchedule = true
	s.scheduleLocked()
	s.log.V(1).Info("steps enqueued", "count", req.Count, "runsOn", runsOn, "repository", repo.uuid)
	return ids, nil
}

func (s *Server) enqueueTargetLocked(wsKey, repoKey string) (*repository, error) {
	if len(s.workspaces) == 0 {
		return nil, errors.New("enqueue: no workspace configured")
	}
	ws := s.workspaces[0]
	if wsKey != "" {
		if ws = s.findWorkspace(wsKey); ws == nil {
			return nil, fmt.Errorf("enqueue: workspace %s not found", wsKey)
		}
	}
	if len(ws.repos) == 0 {
		return nil, fmt.Errorf("enqueue: workspace %s has no repository", ws.slug)
	}
	repo := ws.repos[0]
	if repoKey != "" {
		if repo = findRepository(ws, repoKey); repo == nil {
			return nil, fmt.Errorf("enqueue: repository %s not found in workspace %s", repoKey, ws.slug)
		}
	}
	return repo, nil
}

func (s *Server) newPipelineLocked(repo *repository, now time.Time) *pipeline {
	s.pipelineSerial[repo.uuid]++
	p := &pipeline{
		uuid: newUUID(), repo: repo, buildNumber: s.pipelineSerial[repo.uuid],
		commit: randomToken(20), refName: "main", createdOn: now,
	}
	s.pipelines[p.uuid] = p
	return p
}

// Tick runs one scheduler pass now: it connects agents whose delay passed,
// completes steps that reached their duration and assigns queued steps.
// The scheduler calls it on its own; tests with an injected clock call it
// after moving the clock to observe the effect without waiting.
func (s *Server) Tick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scheduleLocked()
}

func (s *Server) schedulerLoop() {
	defer close(s.loopDone)
	ticker := time.NewTicker(schedulerPeriod)
	defer ticker.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-ticker.C:
		case <-s.wake:
		}
		s.Tick()
	}
}

func (s *Server) scheduleLocked() {
	now := s.now()
	s.connectDueAgentsLocked(now)
	s.expireAgentsLocked(now)
	for _, r := range s.runnerOrder {
		// A real agent ends its steps itself, when they have run.
		if st := r.current; st != nil && !r.realAgent && !now.Before(st.startedAt.Add(st.duration)) {
			s.completeStepLocked(r, st)
		}
	}
	if !s.needsSchedule {
		return
	}
	s.needsSchedule = false
	s.assignLocked(now)
}

// assignLocked hands queued steps, oldest first, to free runners. A step may
// only run on a connected, enabled runner that serves its repository and
// carries all its labels; each runner runs one step at a time.
func (s *Server) assignLocked(now time.Time) {
	var free []*runner
	for _, r := range s.runnerOrder {
		if r.schedulable() && r.current == nil {
			free = append(free, r)
		}
	}
	if len(free) == 0 && s.noMatch != noMatchFail {
		s.queue = slices.DeleteFunc(s.queue, func(st *step) bool { return st.phase != phaseQueued })
		return
	}
	// The runner idle longest goes first, which spreads work like a pull queue does.
	slices.SortStableFunc(free, func(a, b *runner) int { return a.idleSince.Compare(b.idleSince) })

	waiting := s.queue[:0]
	for _, st := range s.queue {
		if st.phase != phaseQueued {
			continue
		}
		i := slices.IndexFunc(free, func(r *runner) bool { return r.serves(st.pipeline.repo) && r.hasLabels(st.runsOn) })
		if i >= 0 {
			s.startStepLocked(free[i], st, now)
			free = slices.Delete(free, i, i+1)
			continue
		}
		if s.noMatch == noMatchFail && !s.onlineMatchLocked(st) {
			s.finishStepLocked(st, ResultFailed, ReasonNoMatch, now)
			continue
		}
		waiting = append(waiting, st)
	}
	clear(s.queue[len(waiting):])
	s.queue = waiting
}

// onlineMatchLocked reports whether some ONLINE runner (busy or not) could run
// the step; DISABLED runners do not count, as they show as DISABLED, not ONLINE.
func (s *Server) onlineMatchLocked(st *step) bool {
	for _, r := range s.runnerOrder {
		if r.schedulable() && r.serves(st.pipeline.repo) && r.hasLabels(st.runsOn) {
			return true
		}
	}
	return false
}

func (s *Server) startStepLocked(r *runner, st *step, now time.Time) {
	st.phase = phaseRunning
	st.startedAt = now
	st.runnerUUID = r.uuid
	r.current = st
	s.touchRunnerLocked(r)
	if p := st.pipeline; !p.startSent {
		p.startSent = true
		s.emitCommitStatusLocked(p, eventStatusUpdated)
	}
}

func (s *Server) completeStepLocked(r *runner, st *step) {
	// The step ends exactly at its duration even if this pass runs a little later,
	// so that recorded run times are what was asked for.
	end := st.startedAt.Add(st.duration)
	r.current = nil
	r.stepsCompleted++
	r.idleSince = end
	s.touchRunnerLocked(r)
	s.finishStepLocked(st, ResultSuccessful, "", end)
}

// failStepLocked ends a queued or running step unsuccessfully and frees its runner.
func (s *Server) failStepLocked(st *step, result, reason string) {
	if st.phase == phaseDone {
		return
	}
	now := s.now()
	if st.phase == phaseRunning {
		if r := s.runners[st.runnerUUID]; r != nil && r.current == st {
			r.current = nil
			r.idleSince = now
			s.touchRunnerLocked(r)
		}
	}
	s.finishStepLocked(st, result, reason, now)
}

func (s *Server) finishStepLocked(st *step, result, reason string, at time.Time) {
	st.phase = phaseDone
	st.result = result
	st.reason = reason
	st.completedAt = at
	s.needsSchedule = true
	if result != ResultSuccessful {
		s.log.V(1).Info("step failed", "step", st.uuid, "result", result, "reason", reason)
	}
	p := st.pipeline
	if p.finishSent || !p.completed() {
		return
	}
	p.finishSent = true
	s.emitCommitStatusLocked(p, eventStatusUpdated)
}

func (p *pipeline) completed() bool {
	for _, st := range p.steps {
		if st.phase != phaseDone {
			return false
		}
	}
	return true
}

func (p *pipeline) started() bool {
	for _, st := range p.steps {
		if st.phase != phaseQueued || !st.startedAt.IsZero() {
			return true
		}
	}
	return false
}

// result is the pipeline outcome: ERROR outranks FAILED outranks SUCCESSFUL.
func (p *pipeline) result() string {
	result := ResultSuccessful
	for _, st := range p.steps {
		switch st.result {
		case ResultError:
			return ResultError
		case ResultFailed:
			result = ResultFailed
		}
	}
	return result
}

func (p *pipeline) completedOn() time.Time {
	var last time.Time
	for _, st := range p.steps {
		if st.completedAt.After(last) {
			last = st.completedAt
		}
	}
	return last
}
