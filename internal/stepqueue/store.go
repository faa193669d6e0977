package stepqueue

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

// Limits of one refresh.
const (
	// DefaultMaxPipelines caps how many running pipelines of a repository get
	// their steps read per refresh: one request each. The newest are read,
	// since old running pipelines are mostly ones whose steps all started.
	DefaultMaxPipelines = 20
	// parallelReads bounds the requests one refresh has in flight at once.
	parallelReads = 4
	// StepsReuseTTL bounds how long the steps of an unchanged pipeline are
	// reused without reading them again (see reusable).
	StepsReuseTTL = time.Minute
	pipelineFile  = "bitbucket-pipelines.yml"
)

// RepoKey names one repository on one Bitbucket installation, and whose reading it is: the
// reading shared by every credential proven on the repository has no Credential; a credential
// not proven there reads with its own (see Reader).
type RepoKey struct {
	APIURL     string
	Workspace  string // workspace UUID with braces (or slug)
	Repository string // repository UUID with braces (or slug)
	// Credential is the hash of the credential whose own reading this is; empty when shared.
	Credential string
}

func (k RepoKey) String() string {
	s := fmt.Sprintf("%s %s/%s", k.APIURL, k.Workspace, k.Repository)
	if k.Credential != "" {
		s += " credential " + k.Credential[:min(8, len(k.Credential))]
	}
	return s
}

// WaitingStep is a pipeline step that waits for a runner.
type WaitingStep struct {
	// UUID is the step's UUID, or empty when the step is known from the
	// pipeline file alone: the steps of a PENDING pipeline are not read (see
	// Store). PipelineUUID and Position identify a step either way.
	UUID         string
	PipelineUUID string
	// Position is the step's index in its pipeline, in the order the steps
	// API lists them (the file's order, parallel and stage steps flattened).
	Position    int
	BuildNumber int
	Name        string
	Workspace   string // as in the RepoKey it was read with
	Repository  string // as in the RepoKey it was read with
	// RunsOn is the step's runs-on labels from bitbucket-pipelines.yml at the
	// pipeline's commit. Empty means the step is not for a self-hosted runner,
	// or (with Reason set) that its labels could not be found. Shared with the
	// store: read only.
	RunsOn []string
	// Reason says why RunsOn could not be read; empty when it was.
	Reason string
	// FirstSeen is when this process first saw the step waiting.
	FirstSeen time.Time
}

// SelfHosted reports a step that waits for a self-hosted runner.
func (w WaitingStep) SelfHosted() bool { return len(w.RunsOn) > 0 }

// ID identifies the step within this process, whether or not its UUID is
// known yet: its pipeline and its position there.
func (w WaitingStep) ID() string { return fmt.Sprintf("%s#%d", w.PipelineUUID, w.Position) }

// Wanted reports whether a waiting step with these runs-on labels matters to
// the caller: whether some pool it reads for could take the step. Steps of no
// interest are still reported, but a pipeline is not read again for them.
type Wanted func(runsOn []string) bool

// Store keeps, per repository, the steps waiting for a runner, and per
// commit the parsed runs-on labels of bitbucket-pipelines.yml. It is safe
// for concurrent use.
//
// One refresh of a repository costs, against the hourly request budget:
// 1 pipelines list (up to the client's page limit, 2 pages by default;
// usually 1), plus 1 file read per commit not seen before that has a
// waiting step, plus 1 steps list per running pipeline (at most
// MaxPipelines) whose steps cannot be told otherwise (see stepsPlan): a
// PENDING pipeline's steps come from its file, and a pipeline is read again
// only when its listing shows a change the rules cannot follow, or when it
// still holds a waiting step some pool wants. All of them are low priority,
// so they stop before the reserve that runner creates and deletes depend on.
type Store struct {
	// MaxPipelines caps the running pipelines read per refresh (default 20).
	// Set before first use.
	MaxPipelines int
	// Logger receives V(1) notes about truncated reads and unreadable
	// labels. Set before first use.
	Logger logr.Logger

	now   func() time.Time
	files *fileCache

	mu      sync.Mutex
	entries map[RepoKey]*entry
}

type entry struct {
	snap     *snapshot
	inflight *call
	// firstSeen remembers, per running pipeline, when each of its steps (by
	// position) was first seen waiting.
	firstSeen map[string]map[int]time.Time
	// steps holds, per running pipeline, its steps as last read, so a
	// pipeline that cannot have changed is not read again.
	steps map[string]readSteps
}

// readSteps is what is known of a pipeline's steps and the pipeline as it
// was listed then: read from the steps API, or told by the pipeline file and
// the pipeline's state (stepsPlan).
type readSteps struct {
	at       time.Time
	pipeline bitbucket.Pipeline
	steps    []bitbucket.Step
	// labels are the steps' runs-on labels as resolved then; nil when no
	// step waited.
	labels []resolution
}

type snapshot struct {
	at    time.Time
	steps []WaitingStep
}

type call struct {
	started time.Time
	done    chan struct{}
	waiters int // callers sharing this refresh besides the one running it
	snap    *snapshot
	err     error
}

// NewStore returns an empty store. now may be nil for the real clock.
func NewStore(now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{
		MaxPipelines: DefaultMaxPipelines,
		now:          now,
		files:        newFileCache(DefaultCommitCacheSize),
		entries:      map[RepoKey]*entry{},
	}
}

// Waiting returns the steps of repository k that wait for a runner, as read
// at or after notBefore: it reads Bitbucket only when the latest reading is
// older. Concurrent callers share one refresh, which runs with the context
// of the caller that started it. Steps come oldest pipeline first, in
// pipeline order within a pipeline.
func (s *Store) Waiting(ctx context.Context, api bitbucket.QueueReader, k RepoKey, notBefore time.Time) ([]WaitingStep, error) {
	return s.WaitingFor(ctx, api, k, notBefore, nil)
}

// WaitingFor is Waiting with the caller's rule of which steps matter: a
// refresh it starts reads a running pipeline again, for a step that may have
// started unseen, only when wanted accepts that step's labels (nil accepts
// any self-hosted step). Callers sharing a repository should pass the same
// rule, since a refresh runs with the rule of the caller that started it.
func (s *Store) WaitingFor(ctx context.Context, api bitbucket.QueueReader, k RepoKey, notBefore time.Time, wanted Wanted) ([]WaitingStep, error) {
	for {
		s.mu.Lock()
		e := s.entries[k]
		if e == nil {
			e = &entry{firstSeen: map[string]map[int]time.Time{}, steps: map[string]readSteps{}}
			s.entries[k] = e
		}
		if e.snap != nil && !e.snap.at.Before(notBefore) {
			snap := e.snap
			s.mu.Unlock()
			return slices.Clone(snap.steps), nil
		}
		if c := e.inflight; c != nil {
			c.waiters++
			s.mu.Unlock()
			select {
			case <-c.done:
			case <-ctx.Done():
				return nil, fmt.Errorf("waiting steps of %s: %w", k, ctx.Err())
			}
			if c.err != nil {
				return nil, c.err
			}
			if !c.started.Before(notBefore) {
				return slices.Clone(c.snap.steps), nil
			}
			continue // that refresh started too early for this caller
		}
		c := &call{started: s.now(), done: make(chan struct{})}
		e.inflight = c
		// Only the refresh in flight writes e.steps, so a copy read now is
		// what that refresh may reuse.
		known := maps.Clone(e.steps)
		s.mu.Unlock()

		s.run(ctx, api, k, e, c, known, wanted)
		if c.err != nil {
			return nil, c.err
		}
		return slices.Clone(c.snap.steps), nil
	}
}

// Peek returns the latest reading of k and when it was taken, without
// calling Bitbucket; ok is false when there is none. A caller whose refresh
// failed (budget spent, Bitbucket down) can fall back to it.
func (s *Store) Peek(k RepoKey) (steps []WaitingStep, at time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[k]
	if e == nil || e.snap == nil {
		return nil, time.Time{}, false
	}
	return slices.Clone(e.snap.steps), e.snap.at, true
}

// Forget drops what the store holds for a repository no pool serves any
// more. Parsed files stay in the bounded commit cache.
func (s *Store) Forget(k RepoKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[k]; e != nil && e.inflight == nil {
		delete(s.entries, k)
	}
}

// run performs one shared refresh and publishes its result.
func (s *Store) run(ctx context.Context, api bitbucket.QueueReader, k RepoKey, e *entry, c *call, known map[string]readSteps, wanted Wanted) {
	var r *reading
	defer func() {
		// Runs on panic too, so that callers sharing this refresh never hang.
		if p := recover(); p != nil {
			c.err = fmt.Errorf("waiting steps of %s: panic: %v", k, p)
		}
		s.mu.Lock()
		e.inflight = nil
		if c.err == nil {
			c.snap = &snapshot{at: c.started, steps: r.publish(e, c.started)}
			if e.snap == nil || !e.snap.at.After(c.started) {
				e.snap = c.snap
			}
		}
		s.mu.Unlock()
		close(c.done)
	}()
	var err error
	r, err = s.read(bitbucket.WithPriority(ctx, bitbucket.PriorityLow), api, k, c.started, known, wanted)
	if err != nil {
		c.err = fmt.Errorf("waiting steps of %s: %w", k, err)
	}
}

// reading is what one refresh learnt from Bitbucket.
type reading struct {
	key    RepoKey
	listed map[string]bool // every running pipeline listed, read or not
	read   []pipelineSteps // pipelines whose steps were read or reused, oldest first
	steps  map[string]readSteps
}

type pipelineSteps struct {
	pipeline bitbucket.Pipeline
	steps    []bitbucket.Step // all of them: matching to the file goes by position too
	labels   []resolution     // parallel to steps; nil when no step waits
}

func (ps *pipelineSteps) anyWaiting() bool {
	return slices.ContainsFunc(ps.steps, bitbucket.Step.Waiting)
}

// read lists the running pipelines and works out the steps of the newest
// MaxPipelines of them: from what is known when the listing shows they
// cannot have changed in a way that matters (stepsPlan), from the pipeline
// file for a PENDING pipeline, and from the steps API otherwise; then the
// file of each commit with waiting steps that is not cached yet.
func (s *Store) read(ctx context.Context, api bitbucket.QueueReader, k RepoKey, at time.Time, known map[string]readSteps, wanted Wanted) (*reading, error) {
	log := s.Logger
	if log.GetSink() == nil {
		log = logr.Discard()
	}
	log = log.WithValues("workspace", k.Workspace, "repository", k.Repository)

	pipelines, err := api.ListPipelines(ctx, k.Workspace, k.Repository, bitbucket.RunningPipelineStatuses...)
	if err != nil {
		return nil, err
	}
	r := &reading{key: k, listed: map[string]bool{}}
	var candidates []bitbucket.Pipeline
	for _, p := range pipelines {
		if r.listed[p.UUID] || !p.Running() {
			continue
		}
		r.listed[p.UUID] = true
		if !paused(p) {
			candidates = append(candidates, p)
		}
	}
	slices.SortStableFunc(candidates, newestFirst)
	maxPipelines := s.MaxPipelines
	if maxPipelines <= 0 {
		maxPipelines = DefaultMaxPipelines
	}
	if len(candidates) > maxPipelines {
		log.V(1).Info("more running pipelines than read per refresh; reading the newest", "running", len(candidates), "read", maxPipelines)
		candidates = candidates[:maxPipelines]
	}

	read := make([]pipelineSteps, len(candidates))
	r.steps = map[string]readSteps{}
	var toRead, fromFile []int
	for i, p := range candidates {
		prev, ok := known[p.UUID]
		switch plan := stepsPlan(prev, ok, p, at, wanted); plan {
		case planKeep:
			read[i] = pipelineSteps{pipeline: p, steps: prev.steps}
			r.steps[p.UUID] = prev
		case planStarted:
			rs := readSteps{at: at, pipeline: p, steps: startedAll(prev.steps, at)}
			read[i] = pipelineSteps{pipeline: p, steps: rs.steps}
			r.steps[p.UUID] = rs
		case planFile:
			fromFile = append(fromFile, i)
		default:
			toRead = append(toRead, i)
		}
	}

	// A PENDING pipeline has started none of its steps: they are the steps
	// of the section of its file it runs, every one waiting. The file is
	// read for their labels in any case, so this saves the steps list.
	var pendingKeys []commitKey
	for _, i := range fromFile {
		if key, ok := fileKey(k, candidates[i]); ok {
			pendingKeys = append(pendingKeys, key)
		}
	}
	files, err := s.fetchFiles(ctx, api, k, pendingKeys)
	if err != nil {
		return nil, err
	}
	for _, i := range fromFile {
		p := candidates[i]
		key, ok := fileKey(k, p)
		steps, told := []bitbucket.Step(nil), false
		if ok {
			steps, told = pendingSteps(p, files[key])
		}
		if !told {
			toRead = append(toRead, i)
			continue
		}
		read[i] = pipelineSteps{pipeline: p, steps: steps}
		r.steps[p.UUID] = readSteps{at: at, pipeline: p, steps: steps}
	}

	slices.Sort(toRead)
	fresh := make([]readSteps, len(toRead))
	err = forEach(ctx, len(toRead), func(ctx context.Context, j int) error {
		p := candidates[toRead[j]]
		steps, err := api.ListSteps(ctx, k.Workspace, k.Repository, p.UUID)
		if bitbucket.IsNotFound(err) {
			return nil // deleted since it was listed: nothing waits in it
		}
		read[toRead[j]] = pipelineSteps{pipeline: p, steps: steps}
		fresh[j] = readSteps{at: at, pipeline: p, steps: steps}
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, rs := range fresh {
		if rs.pipeline.UUID != "" {
			r.steps[rs.pipeline.UUID] = rs
		}
	}
	read = slices.DeleteFunc(read, func(ps pipelineSteps) bool { return ps.pipeline.UUID == "" })

	var waitingKeys []commitKey
	for i := range read {
		if key, ok := fileKey(k, read[i].pipeline); ok && read[i].anyWaiting() {
			waitingKeys = append(waitingKeys, key)
		}
	}
	more, err := s.fetchFiles(ctx, api, k, waitingKeys)
	if err != nil {
		return nil, err
	}
	for i := range read {
		ps := &read[i]
		if !ps.anyWaiting() {
			continue
		}
		ps.labels = labelsOf(k, ps, more)
		rs := r.steps[ps.pipeline.UUID]
		rs.labels = ps.labels
		r.steps[ps.pipeline.UUID] = rs
		for j, st := range ps.steps {
			if reason := ps.labels[j].reason; reason != "" && st.Waiting() {
				log.V(1).Info("runs-on labels of a waiting step not found", "pipeline", ps.pipeline.UUID, "step", st.UUID, "position", j, "reason", reason)
			}
		}
	}
	slices.Reverse(read) // oldest first, the order Bitbucket serves its queue in
	r.read = read
	return r, nil
}

// labelsOf resolves the runs-on labels of every step of a pipeline from the
// file of its commit.
func labelsOf(k RepoKey, ps *pipelineSteps, files map[commitKey]parsedFile) []resolution {
	reason := "the pipeline names no commit"
	if key, ok := fileKey(k, ps.pipeline); ok {
		file := files[key]
		if file.reason == "" {
			return resolveRunsOn(ps.pipeline.Target, ps.steps, file.specs)
		}
		reason = file.reason
	}
	out := make([]resolution, len(ps.steps))
	for i := range out {
		out[i].reason = reason
	}
	return out
}

// fetchFiles returns the parsed pipeline file of each commit, fetching
// those the cache lacks: one request per commit. A missing or broken file is
// cached like a good one, since a commit's file never changes.
func (s *Store) fetchFiles(ctx context.Context, api bitbucket.QueueReader, k RepoKey, keys []commitKey) (map[commitKey]parsedFile, error) {
	files := map[commitKey]parsedFile{}
	var missing []commitKey
	for _, key := range keys {
		if _, done := files[key]; done || slices.Contains(missing, key) {
			continue
		}
		if file, cached := s.files.get(key); cached {
			files[key] = file
		} else {
			missing = append(missing, key)
		}
	}
	fetched := make([]parsedFile, len(missing))
	err := forEach(ctx, len(missing), func(ctx context.Context, i int) error {
		key := missing[i]
		data, err := api.GetFile(ctx, k.Workspace, k.Repository, key.commit, pipelineFile)
		switch {
		case bitbucket.IsNotFound(err):
			fetched[i] = parsedFile{reason: fmt.Sprintf("no %s at commit %s", pipelineFile, key.commit)}
		case err != nil:
			return err
		default:
			specs, err := bitbucket.ParsePipelineSteps(data)
			if err != nil {
				fetched[i] = parsedFile{reason: fmt.Sprintf("%s at commit %s: %v", pipelineFile, key.commit, err)}
			} else {
				fetched[i] = parsedFile{specs: specs}
			}
		}
		s.files.put(key, fetched[i])
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, key := range missing {
		files[key] = fetched[i]
	}
	return files, nil
}

func fileKey(k RepoKey, p bitbucket.Pipeline) (commitKey, bool) {
	if p.Target.Commit == "" {
		return commitKey{}, false
	}
	return commitKey{apiURL: k.APIURL, workspace: k.Workspace, repository: k.Repository, commit: p.Target.Commit}, true
}

// publish turns a reading into waiting steps, remembering when each step was
// first seen. Called with the store locked.
func (r *reading) publish(e *entry, at time.Time) []WaitingStep {
	// Pipelines not listed any more finished: their steps are never reused.
	e.steps = r.steps
	for uuid := range e.firstSeen {
		if !r.listed[uuid] {
			delete(e.firstSeen, uuid)
		}
	}
	var out []WaitingStep
	for _, ps := range r.read {
		previous := e.firstSeen[ps.pipeline.UUID]
		seen := map[int]time.Time{}
		for i, st := range ps.steps {
			if !st.Waiting() {
				continue
			}
			first, ok := previous[i]
			if !ok {
				first = at
			}
			seen[i] = first
			out = append(out, WaitingStep{
				UUID: st.UUID, PipelineUUID: ps.pipeline.UUID, Position: i, BuildNumber: ps.pipeline.BuildNumber, Name: st.Name,
				Workspace: r.key.Workspace, Repository: r.key.Repository,
				RunsOn: ps.labels[i].runsOn, Reason: ps.labels[i].reason, FirstSeen: first,
			})
		}
		if len(seen) > 0 {
			e.firstSeen[ps.pipeline.UUID] = seen
		} else {
			delete(e.firstSeen, ps.pipeline.UUID)
		}
	}
	return out
}

// readPlan is how a refresh learns the steps of a running pipeline.
type readPlan int

const (
	// planRead: list its steps.
	planRead readPlan = iota
	// planKeep: what is known (prev) is what a read would return, as far as
	// any pool can tell.
	planKeep
	// planStarted: the one step the pipeline had waiting has started.
	planStarted
	// planFile: the pipeline is PENDING and not known: its steps are the
	// ones its file lists (pendingSteps), or read when the file cannot say.
	planFile
)

// stepsPlan decides, from the pipeline as listed now and what is known of it
// (prev, when known), whether its steps must be read. Bitbucket has no field
// that changes whenever a step of a pipeline changes, but the pipeline's
// state tells a lot, as long as the pipeline (UUID, build number) is the
// same:
//
//   - A PENDING pipeline has started none of its steps, since the first step
//     to start turns it IN_PROGRESS: its steps wait as they did, however
//     long ago they were learnt, and a new one's are those of its file.
//   - A pipeline that was PENDING with one step and is IN_PROGRESS now has
//     started that step: nothing else can have turned it.
//   - An IN_PROGRESS pipeline in the same state whose steps had all started
//     or finished: a started step never waits again within the same run, and
//     a rerun goes through COMPLETED, which drops the pipeline from the
//     running list and from what is known.
//   - An IN_PROGRESS pipeline in the same state whose waiting steps no pool
//     wants (cloud steps, steps whose labels cannot be read, labels no pool
//     has): a step of it may have started, but no count changes with it.
//
// The rules must never hide a step that started from a pool that wants it:
// a waiting step counted after a runner took it makes the pool start a
// runner nobody uses. So an IN_PROGRESS pipeline with a wanted step still
// waiting (the usual case of sequential steps) is read at every refresh: a
// step may start without the pipeline's state changing. StepsReuseTTL bounds
// the reuse of a running pipeline's steps, in case Bitbucket ever changes
// steps in a way these rules do not foresee.
func stepsPlan(prev readSteps, known bool, p bitbucket.Pipeline, at time.Time, wanted Wanted) readPlan {
	pending := p.State.Name == bitbucket.StatePending
	if !known || prev.pipeline.BuildNumber != p.BuildNumber {
		if pending {
			return planFile
		}
		return planRead
	}
	if sameState(prev.pipeline.State, p.State) {
		if pending {
			return planKeep
		}
		if at.Sub(prev.at) >= StepsReuseTTL || at.Before(prev.at) {
			return planRead
		}
		for i, st := range prev.steps {
			if notStarted(st) && prev.matters(i, wanted) {
				return planRead
			}
		}
		return planKeep
	}
	switch {
	case pending:
		// Back to PENDING without a new build number: nothing known holds.
		return planFile
	case prev.pipeline.State.Name == bitbucket.StatePending && p.State.Name == bitbucket.StateInProgress &&
		len(prev.steps) == 1 && notStarted(prev.steps[0]):
		return planStarted
	}
	return planRead
}

// notStarted reports a step no runner has picked up and that did not end.
func notStarted(st bitbucket.Step) bool {
	return st.StartedOn.IsZero() && st.State.Name != bitbucket.StateCompleted
}

// matters reports whether step i, known not started, could count for a
// pool: a step not waiting (a paused manual step, whose labels were not
// resolved) or whose labels are unknown is assumed to; a cloud step or a
// step whose labels the file does not give never counts.
func (rs readSteps) matters(i int, wanted Wanted) bool {
	if i >= len(rs.labels) {
		return true
	}
	l := rs.labels[i]
	if l.reason != "" || len(l.runsOn) == 0 {
		return false
	}
	return wanted == nil || wanted(l.runsOn)
}

// startedAll returns the steps with every one not started marked started at
// at: what the pipeline's state says when it cannot be read.
func startedAll(steps []bitbucket.Step, at time.Time) []bitbucket.Step {
	out := slices.Clone(steps)
	for i := range out {
		if notStarted(out[i]) {
			out[i].State = bitbucket.StepState{Name: bitbucket.StateInProgress}
			out[i].StartedOn = at
		}
	}
	return out
}

// pendingSteps returns the steps of a PENDING pipeline as its file lists
// them, all waiting, in the order the steps API lists them: the steps of the
// section the pipeline runs, parallel and stage steps flattened. ok is false
// when the file cannot say (missing, broken, no section for the pipeline's
// target, an empty section): the steps are read then.
func pendingSteps(p bitbucket.Pipeline, file parsedFile) (steps []bitbucket.Step, ok bool) {
	if file.reason != "" {
		return nil, false
	}
	section, err := selectSection(p.Target, file.specs)
	if err != nil {
		return nil, false
	}
	for _, spec := range file.specs {
		if spec.Section == section {
			steps = append(steps, bitbucket.Step{Name: spec.Name, State: bitbucket.StepState{Name: bitbucket.StatePending}})
		}
	}
	return steps, len(steps) > 0
}

func sameState(a, b bitbucket.PipelineState) bool {
	name := func(n *bitbucket.NamedState) string {
		if n == nil {
			return ""
		}
		return n.Name
	}
	return a.Name == b.Name && name(a.Stage) == name(b.Stage) && name(a.Result) == name(b.Result)
}

// paused reports a pipeline stopped at a manual step or halted: none of its
// steps waits for a runner until someone acts, so it is not worth a read.
func paused(p bitbucket.Pipeline) bool {
	return p.State.Stage != nil && (p.State.Stage.Name == bitbucket.StagePaused || p.State.Stage.Name == bitbucket.StageHalted)
}

func newestFirst(a, b bitbucket.Pipeline) int {
	if c := b.CreatedOn.Compare(a.CreatedOn); c != 0 {
		return c
	}
	return cmp.Compare(b.BuildNumber, a.BuildNumber)
}

// forEach runs fn for 0..n-1 with at most parallelReads at a time and
// returns the first error; the others see a cancelled context.
func forEach(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	slots := make(chan struct{}, parallelReads)
	for i := range n {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			err := func() (err error) {
				defer func() {
					if p := recover(); p != nil {
						err = fmt.Errorf("panic: %v", p)
					}
				}()
				return fn(ctx, i)
			}()
			if err != nil {
				once.Do(func() {
					firstErr = err
					cancel()
				})
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
