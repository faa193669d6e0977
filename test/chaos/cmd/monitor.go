package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
)

// Grace periods of the mapping invariants. The operator removes a Bitbucket runner with its
// pool's marker but no Runner once it is controllers.DefaultOrphanGrace old (the manager binary
// uses the default), at its next poll; the rest is reaction time with polls stretched by faults.
const (
	orphanGrace        = controllers.DefaultOrphanGrace + time.Minute
	orphanSeenGrace    = time.Minute
	vanishedGrace      = 90 * time.Second
	ownerlessGrace     = time.Minute
	monitorPeriod      = time.Second
	statusDumpInterval = 15 * time.Second
)

// sample is one consistent-enough look at everything: each list is atomic, the lists are taken
// one after the other, so the invariants allow for the gaps with grace periods.
type sample struct {
	at      time.Time
	pools   []v1alpha1.RunnerPool
	runners []v1alpha1.Runner
	pods    []corev1.Pod
	secrets []corev1.Secret
	bb      bbsim.Snapshot
}

func (r *run) takeSample(ctx context.Context) (*sample, error) {
	c := r.env.c
	s := &sample{at: time.Now()}
	// Unstructured, then one by one: a pool the operator cannot decode (the tenant phase makes
	// one) would fail a typed list and blind the monitor.
	var pools unstructured.UnstructuredList
	pools.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("RunnerPoolList"))
	if err := c.List(ctx, &pools); err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	var runners v1alpha1.RunnerList
	if err := c.List(ctx, &runners); err != nil {
		return nil, fmt.Errorf("list runners: %w", err)
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.HasLabels{v1alpha1.LabelRunner}); err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	var secrets corev1.SecretList
	if err := c.List(ctx, &secrets, client.HasLabels{v1alpha1.LabelRunner}); err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	for _, u := range pools.Items {
		var p v1alpha1.RunnerPool
		if u.GetNamespace() == tenantHostileNamespace || runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p) != nil {
			continue
		}
		s.pools = append(s.pools, p)
	}
	// The hostile tenant's Runners and Secrets are the run's forgeries: the invariants are about
	// the operator's objects.
	for _, rn := range runners.Items {
		if rn.Namespace != tenantHostileNamespace {
			s.runners = append(s.runners, rn)
		}
	}
	for _, sec := range secrets.Items {
		if sec.Namespace != tenantHostileNamespace {
			s.secrets = append(s.secrets, sec)
		}
	}
	s.pods = pods.Items
	s.bb = r.env.sys.BBSim.State()
	return s, nil
}

// ownedRunners are the Runners whose controller is the pool.
func (s *sample) ownedRunners(pool *v1alpha1.RunnerPool) []v1alpha1.Runner {
	var out []v1alpha1.Runner
	for _, rn := range s.runners {
		if ref := metav1.GetControllerOf(&rn); ref != nil && ref.UID == pool.UID {
			out = append(out, rn)
		}
	}
	return out
}

func (s *sample) bbWithPrefix(prefix string) []bbsim.RunnerView {
	var out []bbsim.RunnerView
	for _, rn := range s.bb.Runners {
		if strings.HasPrefix(rn.Name, prefix) {
			out = append(out, rn)
		}
	}
	return out
}

// monitor checks the invariants that must hold at every moment, once a second, for the whole run.
type monitor struct {
	r *run

	mu sync.Mutex
	// prefixes maps every pool marker ever seen to its pool, deleted pools included.
	prefixes map[string]string
	// pending discrepancies, by key, with when they were first seen.
	pending map[string]time.Time
	// reported discrepancies are counted once.
	reported map[string]bool
	// overMax is the set of pools currently above max, so that one episode counts once.
	overMax      map[string]bool
	samples      int
	sampleErrors int
	limitSeen    bool
	lastDump     time.Time
	statusFile   *os.File
}

func newMonitor(r *run) *monitor {
	m := &monitor{
		r:        r,
		prefixes: map[string]string{},
		pending:  map[string]time.Time{},
		reported: map[string]bool{},
		overMax:  map[string]bool{},
	}
	f, err := os.Create(filepath.Join(r.tmp, "statuses.jsonl"))
	if err == nil {
		m.statusFile = f
	}
	return m
}

func (m *monitor) rememberPool(pool *v1alpha1.RunnerPool) {
	if pool.UID == "" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.prefixes[controllers.BitbucketNamePrefix(pool)] = pool.Namespace + "/" + pool.Name
}

func (m *monitor) knownPrefixes() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.prefixes))
	for k, v := range m.prefixes {
		out[k] = v
	}
	return out
}

func (m *monitor) loop(ctx context.Context) {
	t := time.NewTicker(monitorPeriod)
	defer t.Stop()
	for {
		m.check(ctx)
		select {
		case <-ctx.Done():
			if m.statusFile != nil {
				_ = m.statusFile.Close()
			}
			return
		case <-t.C:
		}
	}
}

// check takes a sample and applies the continuous invariants to it.
func (m *monitor) check(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := m.r.takeSample(sctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		// The API server restarts during one scenario; a failed sample is not a finding.
		m.sampleErrors++
		return
	}
	m.samples++
	for i := range s.pools {
		if s.pools[i].UID != "" {
			m.prefixes[controllers.BitbucketNamePrefix(&s.pools[i])] = s.pools[i].Namespace + "/" + s.pools[i].Name
		}
	}
	m.checkMax(s)
	seen := map[string]bool{}
	m.checkMapping(s, seen)
	m.checkOwnerless(s, seen)
	for key := range m.pending {
		if !seen[key] {
			delete(m.pending, key)
		}
	}
	for _, rn := range s.runners {
		if c := meta.FindStatusCondition(rn.Status.Conditions, v1alpha1.ConditionRegistered); c != nil && c.Reason == controllers.ReasonRunnerLimitReached {
			m.limitSeen = true
		}
	}
	if time.Since(m.lastDump) >= statusDumpInterval {
		m.lastDump = time.Now()
		m.dumpStatuses(s)
	}
}

// checkMax: a pool never has more Runners, nor more Bitbucket runners with its marker, than
// maxRunners. Draining and deleting ones count: each is still a Bitbucket registration.
func (m *monitor) checkMax(s *sample) {
	for i := range s.pools {
		pool := &s.pools[i]
		key := pool.Namespace + "/" + pool.Name
		runners := len(s.ownedRunners(pool))
		bb := len(s.bbWithPrefix(controllers.BitbucketNamePrefix(pool)))
		over := runners > int(pool.Spec.MaxRunners) || bb > int(pool.Spec.MaxRunners)
		if over && !m.overMax[key] {
			kind := violationMaxExceeded
			if runners <= int(pool.Spec.MaxRunners) {
				kind = violationMaxExceededBitbucket
			}
			m.r.res.violation(kind, fmt.Sprintf("pool %s: %d Runners and %d Bitbucket runners with its marker, maxRunners %d", key, runners, bb, pool.Spec.MaxRunners))
		}
		m.overMax[key] = over
	}
}

// checkMapping: every Bitbucket runner with a pool's marker has a Runner (after the orphan
// grace), and every registered Runner has its Bitbucket runner.
func (m *monitor) checkMapping(s *sample, seen map[string]bool) {
	byUUID, byName := map[string]bool{}, map[string]bool{}
	for _, rn := range s.runners {
		byName[rn.Spec.BitbucketName] = true
		if rn.Status.UUID != "" {
			byUUID[rn.Status.UUID] = true
		}
	}
	for _, bb := range s.bb.Runners {
		pool, marked := m.poolOfName(bb.Name)
		if !marked || byUUID[bb.UUID] || byName[bb.Name] {
			continue
		}
		key := "orphan:" + bb.UUID
		seen[key] = true
		first := m.firstSeen(key, s.at)
		if s.at.Sub(bb.CreatedOn) > orphanGrace && s.at.Sub(first) > orphanSeenGrace && !m.reported[key] {
			m.reported[key] = true
			m.r.res.violation(violationOrphan, fmt.Sprintf("Bitbucket runner %s (%s) of pool %s has had no Runner for %s (created %s ago, state %s, step %q)",
				bb.Name, bb.UUID, pool, s.at.Sub(first).Round(time.Second), s.at.Sub(bb.CreatedOn).Round(time.Second), bb.Status, bb.Step))
		}
	}
	inBB := map[string]bool{}
	for _, bb := range s.bb.Runners {
		inBB[bb.UUID] = true
	}
	for _, rn := range s.runners {
		if rn.Status.UUID == "" || inBB[rn.Status.UUID] {
			continue
		}
		key := "vanished:" + rn.Namespace + "/" + rn.Name + ":" + rn.Status.UUID
		seen[key] = true
		first := m.firstSeen(key, s.at)
		if s.at.Sub(first) > vanishedGrace && !m.reported[key] {
			m.reported[key] = true
			m.r.res.violation(violationVanished, fmt.Sprintf("Runner %s/%s records Bitbucket runner %s, which has not existed for %s (phase %s, deleting %t)",
				rn.Namespace, rn.Name, rn.Status.UUID, s.at.Sub(first).Round(time.Second), rn.Status.Phase, rn.DeletionTimestamp != nil))
		}
	}
}

// checkOwnerless: no runner pod or runner Secret outlives its Runner.
func (m *monitor) checkOwnerless(s *sample, seen map[string]bool) {
	runners := map[string]bool{}
	for _, rn := range s.runners {
		runners[rn.Namespace+"/"+rn.Name] = true
	}
	check := func(kind, ns, name, runner string) {
		if runners[ns+"/"+runner] {
			return
		}
		key := kind + ":" + ns + "/" + name
		seen[key] = true
		first := m.firstSeen(key, s.at)
		if s.at.Sub(first) > ownerlessGrace && !m.reported[key] {
			m.reported[key] = true
			v := violationPodLeak
			if kind == "secret" {
				v = violationSecretLeak
			}
			m.r.res.violation(v, fmt.Sprintf("%s %s/%s has outlived its Runner %s by %s", kind, ns, name, runner, s.at.Sub(first).Round(time.Second)))
		}
	}
	for _, p := range s.pods {
		check("pod", p.Namespace, p.Name, p.Labels[v1alpha1.LabelRunner])
	}
	for _, sec := range s.secrets {
		check("secret", sec.Namespace, sec.Name, sec.Labels[v1alpha1.LabelRunner])
	}
}

func (m *monitor) poolOfName(name string) (string, bool) {
	for prefix, pool := range m.prefixes {
		if strings.HasPrefix(name, prefix) {
			return pool, true
		}
	}
	return "", false
}

func (m *monitor) firstSeen(key string, now time.Time) time.Time {
	if t, ok := m.pending[key]; ok {
		return t
	}
	m.pending[key] = now
	return now
}

func (m *monitor) runnerLimitSeen() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.limitSeen
}

// dumpStatuses appends every pool's and Runner's status: the secret scan reads them, and they
// are the evidence when something goes wrong.
func (m *monitor) dumpStatuses(s *sample) {
	if m.statusFile == nil {
		return
	}
	type line struct {
		Time   time.Time `json:"time"`
		Kind   string    `json:"kind"`
		Name   string    `json:"name"`
		Spec   any       `json:"spec,omitempty"`
		Status any       `json:"status"`
	}
	enc := json.NewEncoder(m.statusFile)
	for _, p := range s.pools {
		_ = enc.Encode(line{s.at, "RunnerPool", p.Namespace + "/" + p.Name, nil, p.Status})
	}
	for _, rn := range s.runners {
		_ = enc.Encode(line{s.at, "Runner", rn.Namespace + "/" + rn.Name, rn.Spec, rn.Status})
	}
}

// final is the strict end-of-run check: every pool was deleted, so nothing of any pool may be
// left in Bitbucket or Kubernetes.
func (m *monitor) final(ctx context.Context) {
	var s *sample
	var err error
	for i := 0; i < 10; i++ {
		if s, err = m.r.takeSample(ctx); err == nil {
			break
		}
		_ = sleep(ctx, time.Second)
	}
	if err != nil {
		m.r.res.fail("final leak check: %v", err)
		return
	}
	m.dumpStatuses(s)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, bb := range s.bb.Runners {
		if pool, marked := m.poolOfName(bb.Name); marked {
			m.r.res.violation(violationLeakedRunner, fmt.Sprintf("Bitbucket runner %s (%s) of deleted pool %s is still registered (state %s)", bb.Name, bb.UUID, pool, bb.Status))
		}
	}
	for _, rn := range s.runners {
		m.r.res.violation(violationLeakedRunnerObject, fmt.Sprintf("Runner %s/%s is left after its pool was deleted (phase %s, finalizers %v)", rn.Namespace, rn.Name, rn.Status.Phase, rn.Finalizers))
	}
	for _, p := range s.pools {
		m.r.res.violation(violationPoolLeft, fmt.Sprintf("RunnerPool %s/%s is not gone (finalizers %v)", p.Namespace, p.Name, p.Finalizers))
	}
	// A pod or Secret whose Runner is still there is counted with that Runner, not as a leak.
	runners := map[string]bool{}
	for _, rn := range s.runners {
		runners[rn.Namespace+"/"+rn.Name] = true
	}
	for _, p := range s.pods {
		if !runners[p.Namespace+"/"+p.Labels[v1alpha1.LabelRunner]] && !m.reported["pod:"+p.Namespace+"/"+p.Name] {
			m.r.res.violation(violationPodLeak, fmt.Sprintf("pod %s/%s is left after every pool and its Runner were deleted", p.Namespace, p.Name))
		}
	}
	for _, sec := range s.secrets {
		if !runners[sec.Namespace+"/"+sec.Labels[v1alpha1.LabelRunner]] && !m.reported["secret:"+sec.Namespace+"/"+sec.Name] {
			m.r.res.violation(violationSecretLeak, fmt.Sprintf("secret %s/%s is left after every pool and its Runner were deleted", sec.Namespace, sec.Name))
		}
	}
	m.r.res.MonitorSamples = m.samples
	m.r.res.MonitorSampleErrors = m.sampleErrors
}
