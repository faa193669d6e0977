package stepqueue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/metrics"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
)

// maxQueueRepositories bounds the repositories a workspace pool reads pipelines from when
// spec.scaling.repositories is empty: each costs at least one call per poll.
const maxQueueRepositories = 25

// repositoryListTTL is how long a workspace's repository list is reused.
const repositoryListTTL = 10 * time.Minute

// Reader reads the steps waiting for each pool's runners. One Reader serves every pool: it
// shares the Store's reads, caches each workspace's repository list and remembers the steps
// each pool saw waiting, for the step-wait metric.
type Reader struct {
	Reader client.Reader
	Steps  *Store
	// Trust says which credentials have proven themselves. Steps go only to pools whose own
	// credential has listed their scope, and a repository's reading is shared only by
	// credentials that have read that repository themselves. Nil trusts every pool and
	// shares every reading (unit tests).
	Trust Trust

	mu      sync.Mutex
	repos   map[string]repoList            // by API URL + workspace
	waiting map[client.ObjectKey]poolWaits // a pool's waiting steps at its last read
}

// poolWaits are the steps waiting for a pool at its last read (by WaitingStep.ID, when each was
// first seen) and the time of that read.
type poolWaits struct {
	at    time.Time
	steps map[string]time.Time
}

type repoList struct {
	at    time.Time
	repos []string
}

// Trust is what the Reader needs to know of credentials; *credentials.Clients implements it.
type Trust interface {
	// Credential is the hash of the credential the pool reads with, "" when unknown.
	Credential(pool *v1alpha1.RunnerPool) string
	// PoolProven reports whether the pool's own credential has listed the pool's scope.
	PoolProven(pool *v1alpha1.RunnerPool) bool
	// Proven and Prove keep, per credential and scope, whether an authenticated call worked.
	Proven(credential, scope string) bool
	Prove(credential, scope string)
}

// NewReader returns a reader with its own caches.
func NewReader(reader client.Reader) *Reader {
	return &Reader{Reader: reader, Steps: NewStore(nil), repos: map[string]repoList{}, waiting: map[client.ObjectKey]poolWaits{}}
}

// Queued returns the number of steps waiting for this pool: steps whose runs-on labels the
// pool covers, each given to exactly one of the pools that could take it, so pools with
// overlapping labels never both scale for the same step.
func (q *Reader) Queued(ctx context.Context, pool *v1alpha1.RunnerPool, apiURL string, api bitbucket.QueueReader, notBefore time.Time) (int, error) {
	ws := string(pool.Spec.Bitbucket.Workspace)
	if q.Trust != nil && !q.Trust.PoolProven(pool) {
		// Its credential has not listed its own scope: it sees no queue, and gets no step.
		return 0, errNotProven
	}
	repos, err := q.repositories(ctx, pool, apiURL, api)
	if err != nil {
		return 0, err
	}
	pools, err := q.poolsOfWorkspace(ctx, ws)
	if err != nil {
		return 0, err
	}
	var waiting []WaitingStep
	for _, repo := range repos {
		steps, err := q.readRepository(ctx, pool, api, Key(apiURL, ws, repo), notBefore, wantedBy(pools, ws, repo))
		if err != nil {
			return 0, fmt.Errorf("read the queue of repository %s: %w", repo, err)
		}
		waiting = append(waiting, steps...)
	}
	id := poolID(pool)
	mine := Assign(waiting, pools)[id]
	q.observeWaits(pool, mine)
	return len(mine), nil
}

// errNotProven is the queue error of a pool whose credential has not worked yet.
var errNotProven = errors.New("the pool's credentials have not listed its runners yet; the queue is read once they have")

// readRepository reads the repository's waiting steps: the reading shared by every credential proven on
// the repository when the pool's credential is one, else a reading of its own, which proves it.
func (q *Reader) readRepository(ctx context.Context, pool *v1alpha1.RunnerPool, api bitbucket.QueueReader, k RepoKey, notBefore time.Time, wanted Wanted) ([]WaitingStep, error) {
	if q.Trust == nil {
		return q.Steps.WaitingFor(ctx, api, k, notBefore, wanted)
	}
	cred, scope := q.Trust.Credential(pool), "pipelines "+k.String()
	if q.Trust.Proven(cred, scope) {
		return q.Steps.WaitingFor(ctx, api, k, notBefore, wanted)
	}
	own := k
	own.Credential = cred
	steps, err := q.Steps.WaitingFor(ctx, api, own, notBefore, wanted)
	if err == nil {
		q.Trust.Prove(cred, scope)
		// Its next read shares the repository's reading; its own is not needed any more.
		q.Steps.Forget(own)
	}
	return steps, err
}

// QueueKey is the key under which the queue of a repository is read and shared. Every pool that
// reads the repository in the same round shares one read, whatever its credential: the runner
// observation is shared per scope the same way, and keying by credential would make pools of
// different teams on one repository each pay for the same read from their hourly budget. UUIDs
// are written one way (braces, lower case), so pools spelling them differently share too.
func Key(apiURL, workspace, repository string) RepoKey {
	return RepoKey{APIURL: apiURL, Workspace: bitbucket.CanonicalID(workspace), Repository: bitbucket.CanonicalID(repository)}
}

// observeWaits records, for steps that were waiting for the pool at its last read and are not
// any more, how long they waited: the queue-to-start latency users feel. A pool that reads the
// queue only now and then (IdleBuffer: after a webhook, or while saturated) does not know when
// a step it lost sight of started; a wait is recorded only when the last read is at most
// maxObservedGap poll intervals old, so that it is right within a poll or two.
func (q *Reader) observeWaits(pool *v1alpha1.RunnerPool, mine []WaitingStep) {
	now := time.Now()
	current := poolWaits{at: now, steps: make(map[string]time.Time, len(mine))}
	for _, s := range mine {
		current.steps[s.ID()] = s.FirstSeen
	}
	key := client.ObjectKeyFromObject(pool)
	q.mu.Lock()
	prev := q.waiting[key]
	q.waiting[key] = current
	q.mu.Unlock()
	if now.Sub(prev.at) > maxObservedGap*pool.Spec.Scaling.PollInterval.Duration {
		return
	}
	for id, first := range prev.steps {
		if _, still := current.steps[id]; !still && !first.IsZero() {
			metrics.StepWaitSeconds.WithLabelValues(pool.Namespace, pool.Name).Observe(now.Sub(first).Seconds())
		}
	}
}

// maxObservedGap is how many poll intervals may pass between two reads of a pool for the waits
// of the steps that started in between to be recorded.
const maxObservedGap = 2

// Forget drops what the reader remembers of a deleted pool.
func (q *Reader) Forget(pool client.ObjectKey) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.waiting, pool)
}

// repositories are the repositories whose pipelines the pool reads.
func (q *Reader) repositories(ctx context.Context, pool *v1alpha1.RunnerPool, apiURL string, api bitbucket.QueueReader) ([]string, error) {
	if r := pool.Spec.Bitbucket.Repository; r != "" {
		return []string{string(r)}, nil
	}
	if len(pool.Spec.Scaling.Repositories) > 0 {
		return pool.Spec.Scaling.Repositories, nil
	}
	ws := string(pool.Spec.Bitbucket.Workspace)
	// A repository list is never shared across credentials: it costs one request per
	// credential every repositoryListTTL.
	key := apiURL + " " + ws
	if q.Trust != nil {
		key += " " + q.Trust.Credential(pool)
	}
	q.mu.Lock()
	cached, ok := q.repos[key]
	q.mu.Unlock()
	if ok && time.Since(cached.at) < repositoryListTTL {
		return cached.repos, nil
	}
	lister, ok := api.(interface {
		ListRepositories(ctx context.Context, workspace, query string) ([]bitbucket.Repository, error)
	})
	if !ok {
		return nil, fmt.Errorf("the Bitbucket client cannot list repositories")
	}
	list, err := lister.ListRepositories(bitbucket.WithPriority(ctx, bitbucket.PriorityLow), ws, "")
	if err != nil {
		return nil, fmt.Errorf("list repositories of %s: %w", ws, err)
	}
	repos := make([]string, 0, min(len(list), maxQueueRepositories))
	for _, r := range list {
		if len(repos) == maxQueueRepositories {
			break
		}
		repos = append(repos, r.UUID)
	}
	q.mu.Lock()
	q.repos[key] = repoList{at: time.Now(), repos: repos}
	q.mu.Unlock()
	return repos, nil
}

// poolsOfWorkspace lists every pool of the workspace, in all watched namespaces, as the queue
// assignment sees them.
func (q *Reader) poolsOfWorkspace(ctx context.Context, workspace string) ([]Pool, error) {
	var list v1alpha1.RunnerPoolList
	if err := q.Reader.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	var pools []Pool
	for i := range list.Items {
		p := &list.Items[i]
		if !bitbucket.SameUUID(string(p.Spec.Bitbucket.Workspace), workspace) || !p.DeletionTimestamp.IsZero() {
			continue
		}
		if q.Trust != nil && !q.Trust.PoolProven(p) {
			// A pool whose credentials never worked would take steps it cannot run.
			continue
		}
		pools = append(pools, Pool{ID: poolID(p), Workspace: string(p.Spec.Bitbucket.Workspace),
			Repository: string(p.Spec.Bitbucket.Repository), Labels: runnerpod.Labels(p)})
	}
	return pools, nil
}

func poolID(pool *v1alpha1.RunnerPool) string { return pool.Namespace + "/" + pool.Name }
