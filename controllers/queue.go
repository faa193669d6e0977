package controllers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/metrics"
	"github.com/runnerpool/runnerpool-operator/internal/queue"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
)

// maxQueueRepositories bounds the repositories a workspace pool reads pipelines from when
// spec.scaling.repositories is empty: each costs at least one call per poll.
const maxQueueRepositories = 25

// repositoryListTTL is how long a workspace's repository list is reused.
const repositoryListTTL = 10 * time.Minute

// QueueReader reads the steps waiting for the pools' runners, shared by every pool.
type QueueReader struct {
	Reader client.Reader
	Steps  *queue.Store

	mu      sync.Mutex
	repos   map[string]repoList                       // by API URL + workspace
	waiting map[client.ObjectKey]map[string]time.Time // a pool's waiting steps at its last read
}

type repoList struct {
	at    time.Time
	repos []string
}

// NewQueueReader returns a reader with its own caches.
func NewQueueReader(reader client.Reader) *QueueReader {
	return &QueueReader{Reader: reader, Steps: queue.NewStore(nil), repos: map[string]repoList{}, waiting: map[client.ObjectKey]map[string]time.Time{}}
}

// wantsQueue reports whether the pool reads the queue on this reconcile: always under the Queue
// policy; under the others while a webhook-requested poll is recent, so a pipeline that just
// started gets runners for all its waiting steps at once instead of one per observation.
func wantsQueue(pool *v1alpha1.RunnerPool, now time.Time) bool {
	if pool.Spec.Scaling.Policy == v1alpha1.ScalingPolicyQueue {
		return true
	}
	requested := pollRequested(pool)
	return !requested.IsZero() && now.Sub(requested) < 2*pool.Spec.Scaling.PollInterval.Duration+time.Minute
}

// Queued returns the number of steps waiting for this pool: steps whose runs-on labels the
// pool covers, each given to exactly one of the pools that could take it, so pools with
// overlapping labels never both scale for the same step.
func (q *QueueReader) Queued(ctx context.Context, pool *v1alpha1.RunnerPool, apiURL string, api BitbucketAPI, notBefore time.Time) (int, error) {
	qr, ok := api.(bitbucket.QueueReader)
	if !ok {
		return 0, fmt.Errorf("the Bitbucket client cannot read pipelines")
	}
	ws := string(pool.Spec.Bitbucket.Workspace)
	repos, err := q.repositories(ctx, pool, apiURL, api)
	if err != nil {
		return 0, err
	}
	var waiting []queue.WaitingStep
	for _, repo := range repos {
		steps, err := q.Steps.Waiting(ctx, qr, QueueKey(apiURL, ws, repo), notBefore)
		if err != nil {
			return 0, fmt.Errorf("read the queue of repository %s: %w", repo, err)
		}
		waiting = append(waiting, steps...)
	}
	pools, err := q.poolsOfWorkspace(ctx, ws)
	if err != nil {
		return 0, err
	}
	id := poolID(pool)
	mine := queue.Assign(waiting, pools)[id]
	q.observeWaits(pool, mine)
	return len(mine), nil
}

// QueueKey is the key under which the queue of a repository is read and shared. Every pool that
// reads the repository in the same round shares one read, whatever its credential: the runner
// observation is shared per scope the same way, and keying by credential would make pools of
// different teams on one repository each pay for the same read from their hourly budget. UUIDs
// are written one way (braces, lower case), so pools spelling them differently share too.
func QueueKey(apiURL, workspace, repository string) queue.RepoKey {
	return queue.RepoKey{APIURL: apiURL, Workspace: canonicalID(workspace), Repository: canonicalID(repository)}
}

// canonicalID writes a UUID with braces in lower case; a slug is left as it is.
func canonicalID(id string) string {
	if bare := strings.Trim(id, "{}"); bareUUID.MatchString(bare) {
		return "{" + strings.ToLower(bare) + "}"
	}
	return id
}

// observeWaits records, for steps that were waiting for the pool at its last read and are not
// any more, how long they waited: the queue-to-start latency users feel.
func (q *QueueReader) observeWaits(pool *v1alpha1.RunnerPool, mine []queue.WaitingStep) {
	now := time.Now()
	current := make(map[string]time.Time, len(mine))
	for _, s := range mine {
		current[s.UUID] = s.FirstSeen
	}
	key := client.ObjectKeyFromObject(pool)
	q.mu.Lock()
	prev := q.waiting[key]
	q.waiting[key] = current
	q.mu.Unlock()
	for uuid, first := range prev {
		if _, still := current[uuid]; !still && !first.IsZero() {
			metrics.StepWaitSeconds.WithLabelValues(pool.Namespace, pool.Name).Observe(now.Sub(first).Seconds())
		}
	}
}

// Forget drops what the reader remembers of a deleted pool.
func (q *QueueReader) Forget(pool client.ObjectKey) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.waiting, pool)
}

// repositories are the repositories whose pipelines the pool reads.
func (q *QueueReader) repositories(ctx context.Context, pool *v1alpha1.RunnerPool, apiURL string, api BitbucketAPI) ([]string, error) {
	if r := pool.Spec.Bitbucket.Repository; r != "" {
		return []string{string(r)}, nil
	}
	if len(pool.Spec.Scaling.Repositories) > 0 {
		return pool.Spec.Scaling.Repositories, nil
	}
	ws := string(pool.Spec.Bitbucket.Workspace)
	key := apiURL + " " + ws
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
func (q *QueueReader) poolsOfWorkspace(ctx context.Context, workspace string) ([]queue.Pool, error) {
	var list v1alpha1.RunnerPoolList
	if err := q.Reader.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	var pools []queue.Pool
	for i := range list.Items {
		p := &list.Items[i]
		if !sameUUID(string(p.Spec.Bitbucket.Workspace), workspace) || !p.DeletionTimestamp.IsZero() {
			continue
		}
		pools = append(pools, queue.Pool{ID: poolID(p), Workspace: string(p.Spec.Bitbucket.Workspace),
			Repository: string(p.Spec.Bitbucket.Repository), Labels: runnerpod.Labels(p)})
	}
	return pools, nil
}

func poolID(pool *v1alpha1.RunnerPool) string { return pool.Namespace + "/" + pool.Name }
