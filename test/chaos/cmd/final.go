package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
)

// minSecretLength keeps short values (which could match by chance) out of the scan; every
// secret of the run is far longer.
const minSecretLength = 16

// finalChecks gathers the figures of the whole run and searches its output for secrets.
func (r *run) finalChecks(ctx context.Context) {
	snap := r.env.sys.BBSim.State()
	stats := r.classify(snap, nil)
	for _, f := range stats.failures {
		r.res.violation(violationStepFailedByUs, f)
	}
	calls, limitHits := operatorCalls(snap)
	webhooks := 0
	for _, w := range snap.Webhooks {
		webhooks += w.Deliveries
	}
	px := r.env.proxy.counts()
	kills, total, selfExits, failovers := r.env.mgrs.stats()
	conflicts := r.countInLogs("the object has been modified")

	res := r.res
	res.mu.Lock()
	res.StepsTotal, res.StepsCompleted = stats.total, stats.ok
	res.StepsFailedByUs, res.StepsFailedByInjected, res.StepsUnfinished = stats.failedUs, stats.failedInjected, stats.unfinished
	res.BusyKilled = stats.busyKilled
	res.MaxQueueWaitSeconds = round1(stats.maxWait().Seconds())
	res.APICalls, res.HourlyLimitHits, res.WebhookDelivered = calls, limitHits, webhooks
	res.CredentialsOverLimit = credentialsOverLimit(snap)
	res.APIAnswersSeen, res.API429Answers, res.API5xxAnswers = px.Requests, px.TooMany, px.ServerErrors
	res.API401Answers, res.APIDropped, res.TokenGrants = px.Unauthorized, px.Dropped, px.TokenGrants
	res.ManagerKills = total
	res.KillsDuringScaleUp, res.KillsDuringScaleDown = kills["scale-up"], kills["scale-down"]
	res.KillsDuringDeletion, res.KillsDuringLoad = kills["deletion"], kills["load"]
	res.KillsDuringTenant = kills["tenant"]
	res.ManagerSelfExits = selfExits
	if len(failovers) > 0 {
		var sum time.Duration
		for _, f := range failovers {
			sum += f
			res.FailoverMaxSeconds = max(res.FailoverMaxSeconds, round1(f.Seconds()))
		}
		res.FailoverMeanSeconds = round1(sum.Seconds() / float64(len(failovers)))
		res.FailoverP50Seconds = round1(percentile(failovers, 0.5).Seconds())
		res.FailoverP95Seconds = round1(percentile(failovers, 0.95).Seconds())
	}
	res.OperatorConflictsLogged = conflicts
	res.mu.Unlock()
	if stats.busyKilled > 0 {
		r.res.violation(violationBusyKilled, fmt.Sprintf("%d steps failed because the operator removed their runner while it ran them (see %s)", stats.busyKilled, violationStepFailedByUs))
	}

	if data, err := json.MarshalIndent(map[string]any{"by_endpoint": snap.Calls, "by_credential": snap.CallsByCredential, "rate_limit_hits": snap.RateLimitHits, "webhooks": snap.Webhooks}, "", " "); err == nil {
		_ = os.WriteFile(filepath.Join(r.tmp, "api-calls.json"), data, 0o644)
	}
	if err := r.dumpEvents(ctx); err != nil {
		r.res.fail("dump events: %v", err)
	}
	r.scanForSecrets()
}

func (r *run) managerLogs() []string {
	logs, _ := filepath.Glob(filepath.Join(r.tmp, "manager-*.log"))
	return logs
}

func (r *run) countInLogs(needle string) int {
	n := 0
	for _, path := range r.managerLogs() {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			if bytes.Contains(sc.Bytes(), []byte(needle)) {
				n++
			}
		}
		_ = f.Close()
	}
	return n
}

// dumpEvents writes every event of the cluster to events.json, for the secret scan and as
// evidence.
func (r *run) dumpEvents(ctx context.Context) error {
	var events eventsv1.EventList
	if err := r.env.c.List(ctx, &events); err != nil {
		return fmt.Errorf("list events: %w", err)
	}
	var core corev1.EventList
	if err := r.env.c.List(ctx, &core); err != nil {
		return fmt.Errorf("list core events: %w", err)
	}
	data, err := json.MarshalIndent(map[string]any{"events.k8s.io": events.Items, "core": core.Items}, "", " ")
	if err != nil {
		return fmt.Errorf("encode events: %w", err)
	}
	return os.WriteFile(filepath.Join(r.tmp, "events.json"), data, 0o644)
}

// secretIndex finds any of many secret values in a text in one pass: candidates are looked up
// by their first minSecretLength bytes at every position, then compared in full.
type secretIndex struct {
	needles [][]byte
	kinds   []string
	byStart map[string][]int
}

// newSecretIndex indexes every value, as is and base64-encoded (how a Secret's data would show
// if an object were logged whole).
func newSecretIndex(secrets map[string]string) *secretIndex {
	idx := &secretIndex{byStart: map[string][]int{}}
	add := func(v []byte, kind string) {
		if len(v) < minSecretLength {
			return
		}
		idx.byStart[string(v[:minSecretLength])] = append(idx.byStart[string(v[:minSecretLength])], len(idx.needles))
		idx.needles = append(idx.needles, v)
		idx.kinds = append(idx.kinds, kind)
	}
	for v, kind := range secrets {
		add([]byte(v), kind)
		add([]byte(base64.StdEncoding.EncodeToString([]byte(v))), kind+" (base64)")
	}
	return idx
}

// find counts the occurrences of each kind of secret in data and the line of the first one.
func (idx *secretIndex) find(data []byte) (counts, firstLine map[string]int) {
	counts, firstLine = map[string]int{}, map[string]int{}
	for i := 0; i+minSecretLength <= len(data); i++ {
		candidates, ok := idx.byStart[string(data[i:i+minSecretLength])]
		if !ok {
			continue
		}
		for _, c := range candidates {
			if bytes.HasPrefix(data[i:], idx.needles[c]) {
				kind := idx.kinds[c]
				if counts[kind] == 0 {
					firstLine[kind] = bytes.Count(data[:i], []byte{'\n'}) + 1
				}
				counts[kind]++
			}
		}
	}
	return counts, firstLine
}

// scanForSecrets searches everything the operator wrote or showed (its logs, the events, the
// pool and Runner statuses, its metrics) and this program's own log for every secret value of
// the run.
func (r *run) scanForSecrets() {
	secrets := r.env.secrets.snapshot()
	idx := newSecretIndex(secrets)
	var files []string
	files = append(files, r.managerLogs()...)
	metrics, _ := filepath.Glob(filepath.Join(r.tmp, "metrics-*.txt"))
	files = append(files, metrics...)
	files = append(files, filepath.Join(r.tmp, "events.json"), filepath.Join(r.tmp, "statuses.jsonl"), filepath.Join(r.tmp, "chaos.log"))
	sort.Strings(files)

	hits, scanned := 0, 0
	var bytesScanned int64
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			r.res.fail("scan %s: %v", filepath.Base(path), err)
			continue
		}
		scanned++
		bytesScanned += int64(len(data))
		counts, firstLine := idx.find(data)
		for kind, n := range counts {
			hits += n
			r.res.violation(violationSecretInOutput, fmt.Sprintf("%s: %d occurrences of a %s, first on line %d", filepath.Base(path), n, kind, firstLine[kind]))
		}
	}
	r.res.mu.Lock()
	r.res.SecretHitsInOutput, r.res.SecretsSearched = hits, len(secrets)
	r.res.FilesScanned, r.res.BytesScanned = scanned, bytesScanned
	r.res.mu.Unlock()
	r.say("searched %d files (%.1f MB) for %d secret values: %d hits", scanned, float64(bytesScanned)/1e6, len(secrets), hits)
}
