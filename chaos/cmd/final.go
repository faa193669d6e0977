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
	res.APIAnswersSeen, res.API429Answers, res.API5xxAnswers = px.Requests, px.TooMany, px.ServerErrors
	res.API401Answers, res.APIDropped, res.TokenGrants = px.Unauthorized, px.Dropped, px.TokenGrants
	res.ManagerKills = total
	res.KillsDuringScaleUp, res.KillsDuringScaleDown = kills["scale-up"], kills["scale-down"]
	res.KillsDuringDeletion, res.KillsDuringLoad = kills["deletion"], kills["load"]
	res.ManagerSelfExits = selfExits
	if len(failovers) > 0 {
		var sum time.Duration
		for _, f := range failovers {
			sum += f
			res.FailoverMaxSeconds = max(res.FailoverMaxSeconds, round1(f.Seconds()))
		}
		res.FailoverMeanSeconds = round1(sum.Seconds() / float64(len(failovers)))
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

// scanForSecrets searches everything the operator wrote or showed (its logs, the events, the
// pool and Runner statuses, its metrics) and this program's own log for every secret value of
// the run, as is and base64-encoded.
func (r *run) scanForSecrets() {
	secrets := r.env.secrets.snapshot()
	type needle struct {
		value []byte
		kind  string
	}
	var needles []needle
	for v, kind := range secrets {
		needles = append(needles, needle{[]byte(v), kind})
		needles = append(needles, needle{[]byte(base64.StdEncoding.EncodeToString([]byte(v))), kind + " (base64)"})
	}
	index := map[string][]int{}
	for i, n := range needles {
		key := string(n.value[:minSecretLength])
		index[key] = append(index[key], i)
	}
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
		found := map[string]int{}
		firstLine := map[string]int{}
		for i := 0; i+minSecretLength <= len(data); i++ {
			candidates, ok := index[string(data[i:i+minSecretLength])]
			if !ok {
				continue
			}
			for _, c := range candidates {
				if bytes.HasPrefix(data[i:], needles[c].value) {
					kind := needles[c].kind
					if found[kind] == 0 {
						firstLine[kind] = bytes.Count(data[:i], []byte{'\n'}) + 1
					}
					found[kind]++
				}
			}
		}
		for kind, n := range found {
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
