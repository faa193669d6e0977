package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
)

// figure is one number the benchmark reports. Targets come from the issue that asked for the
// benchmark; they are printed next to the figures and never fail the run.
type figure struct {
	key   string
	label string
	unit  string // s, count, calls, requests, MiB, ms, %, x
	// target describes the goal, with the Atlassian runners-autoscaler figure where the issue
	// gives one; meets, when set, says whether a value reaches it.
	target string
	meets  func(v float64) bool
}

func atMost(limit float64) func(float64) bool { return func(v float64) bool { return v <= limit+1e-9 } }
func below(limit float64) func(float64) bool  { return func(v float64) bool { return v < limit } }

// pollInterval is the pools' spec.scaling.pollInterval in the burst scenarios: the CRD default.
const pollIntervalSeconds = 15

var figures = slices.Concat([]figure{
	{"burst_webhook_p50_s", "burst, webhook: step wait p50", "s", "", nil},
	{"burst_webhook_p95_s", "burst, webhook: step wait p95", "s", "<= 20 (Atlassian: 425 at a 120 s poll)", atMost(20)},
	{"burst_webhook_max_s", "burst, webhook: step wait max", "s", "", nil},
	{"burst_webhook_excess_p95_s", "burst, webhook: wait above capacity, p95", "s", "<= 20", atMost(20)},
	{"burst_all_done_s", "burst, webhook: all 20 steps done", "s", "", nil},
	{"burst_webhook_peak_runners", "burst, webhook: peak runners", "count", "<= 10", atMost(10)},
	{"burst_poll_p50_s", "burst, polling only: step wait p50", "s", "", nil},
	{"burst_poll_p95_s", "burst, polling only: step wait p95", "s", fmt.Sprintf("<= %d (poll + 10; Atlassian: 840 at its 600 s poll)", pollIntervalSeconds+10), atMost(pollIntervalSeconds + 10)},
	{"burst_poll_max_s", "burst, polling only: step wait max", "s", "", nil},
	{"burst_poll_excess_p95_s", "burst, polling only: wait above capacity, p95", "s", fmt.Sprintf("<= %d", pollIntervalSeconds+10), atMost(pollIntervalSeconds + 10)},
	{"burst_poll_all_done_s", "burst, polling only: all 20 steps done", "s", fmt.Sprintf("<= %d (capacity bound 120 + a poll)", 120+pollIntervalSeconds), atMost(120 + pollIntervalSeconds)},
	{"burst_poll_peak_runners", "burst, polling only: peak runners", "count", "<= 10", atMost(10)},
	{"burst_zero_p50_s", "burst, Queue policy from 0: step wait p50", "s", "", nil},
	{"burst_zero_p95_s", "burst, Queue policy from 0: step wait p95", "s", "<= 20 (webhook on)", atMost(20)},
	{"burst_zero_max_s", "burst, Queue policy from 0: step wait max", "s", "", nil},
	{"burst_zero_excess_p95_s", "burst, Queue policy from 0: wait above capacity, p95", "s", "<= 20", atMost(20)},
	{"burst_zero_all_done_s", "burst, Queue policy from 0: all 20 steps done", "s", "", nil},
	{"burst_zero_peak_runners", "burst, Queue policy from 0: peak runners", "count", "<= 10", atMost(10)},
	{"burst_step_s", "burst: duration of each step", "s", "", nil},
	{"queue_burst_p50_s", "queue burst, polling only: step wait p50", "s", "", nil},
	{"queue_burst_p95_s", "queue burst, polling only: step wait p95", "s", "", nil},
	{"queue_burst_max_s", "queue burst, polling only: step wait max", "s", "", nil},
	{"queue_burst_excess_p95_s", "queue burst, polling only: wait above capacity, p95", "s", fmt.Sprintf("<= %d", pollIntervalSeconds+10), atMost(pollIntervalSeconds + 10)},
	{"queue_burst_all_done_s", "queue burst, polling only: all 20 steps done", "s", "", nil},
	{"queue_burst_peak_runners", "queue burst, polling only: peak runners", "count", "<= 10", atMost(10)},
	{"queue_burst_calls_per_step", "queue burst: pipelines API calls per step started", "calls", "<= 1.5", atMost(1.5)},
	{"queue_burst_runner_calls_per_step", "queue burst: runner API calls per step started", "calls", "", nil},

	{"overshoot_max", "overshoot: peak of Runners and Bitbucket runners", "count", "<= 10 (Atlassian: 20)", atMost(10)},
	{"overshoot_peak_runners", "overshoot: peak Runner objects", "count", "<= 10", atMost(10)},
	{"overshoot_peak_bitbucket_runners", "overshoot: peak Bitbucket runners", "count", "<= 10 (Atlassian: 20)", atMost(10)},
	{"overshoot_peak_pending_pods", "overshoot: peak Pending runner pods", "count", "<= 5, what the pool can use (Atlassian: 15)", atMost(5)},
	{"overshoot_never_online", "overshoot: runners created, never ONLINE", "count", "(Atlassian: 20)", nil},
	{"overshoot_steps_done", "overshoot: steps done in the window", "count", "", nil},
	{"overshoot_window_s", "overshoot: observation window", "s", "", nil},
	{"overshoot_step_s", "overshoot: duration of each step", "s", "", nil},
}, ephemeralFigures(), []figure{
	{"api_calls_per_idle_poll", "API: runner calls per idle poll per scope", "calls", "<= 1", atMost(1)},
	{"api_queue_calls_per_idle_poll", "API: queue reads per idle poll (Queue pool)", "calls", "", nil},
	{"api_calls_per_runner_created", "API: calls per runner created", "calls", "<= 3 (Atlassian: 4 to 6)", atMost(3)},
	{"api_list_calls_per_runner_created", "API: runner lists per runner created", "calls", "0 (no list per create)", atMost(0.25)},
	{"api_calls_per_runner_removed", "API: calls per runner removed", "calls", "<= 3", atMost(3)},
	{"api_calls_per_runner", "API: calls per runner, worse of the two", "calls", "<= 3", atMost(3)},

	{"scale200_s", "scale: 20 pools, 0 -> 200 runners ONLINE", "s", "", nil},
	{"scale200_rawonline_s", "scale: the same 200 pods of runners registered beforehand, plain loop, to ONLINE", "s", "", nil},
	{"scale200_ratio", "scale: operator time / plain loop time to ONLINE", "x", "<= 2", atMost(2)},
	{"scale200_rawcreate_s", "scale: the same 200 pods, plain loop, to Running", "s", "", nil},
	{"scale200_pods_running_s", "scale: until all 200 runner pods Running", "s", "", nil},
	{"scale200_pods_running_ratio", "scale: that time / plain loop time to Running", "x", "", nil},
	{"scale200_online_to_running_ratio", "scale: operator time to ONLINE / plain loop time to Running", "x", "", nil},
	{"scale200_apiserver_requests_per_runner", "scale: apiserver requests per runner", "requests", "", nil},
	{"scale200_apiserver_writes_per_runner", "scale: apiserver writes per runner (Events included)", "requests", "<= 5", atMost(5)},
	{"scale200_apiserver_event_writes_per_runner", "scale: of which Event writes", "requests", "", nil},
	{"scale200_settled_s", "scale: until every Runner and pool status says so", "s", "", nil},
	{"scale200_settled_writes_per_runner", "scale: apiserver writes per runner until then (Events included)", "requests", "", nil},
	{"scale200_bitbucket_calls_per_runner", "scale: Bitbucket calls per runner", "calls", "<= 3", atMost(3)},
	{"scale200_idle_writes_per_runner_poll", "scale: apiserver writes per idle runner per poll", "requests", "", nil},

	{"layercache_cold_build_s", "layercache: a build on a new claim (real node)", "s", "", nil},
	{"layercache_warm_build_s", "layercache: the same build on the claim left by the runner before", "s", "", nil},
	{"layercache_saved_s", "layercache: time the reused claim saved", "s", "", nil},

	{"rss_runners", "rss: Runner objects", "count", "", nil},
	{"rss_mib_idle", "rss: manager RSS with no pool", "MiB", "", nil},
	{"rss_mib_1000_runners", "rss: manager RSS with the Runners", "MiB", "< 150", below(150)},
	{"rss_hwm_mib", "rss: manager peak RSS", "MiB", "", nil},
	{"rss_online_s", "rss: pools created -> all runners ONLINE", "s", "", nil},
	{"rss_cpu_s_create", "rss: manager CPU to bring them up", "s", "", nil},
	{"rss_cpu_ms_per_runner", "rss: manager CPU per runner brought up", "ms", "", nil},
	{"rss_cpu_pct_steady", "rss: manager CPU with all runners idle", "%", "", nil},

	{"busy_killed", "safety: steps killed by scale-down", "count", "0", atMost(0)},
	{"leaked", "safety: runners, pods, Secrets left at the end", "count", "0", atMost(0)},
})

// ephemeralFigures are the ephemeral scenario's figures, in the order of ephemeralVariants.
// Only the webhook variant has targets: without a webhook, a step shorter than the poll interval
// may be followed by another, and the figures measure how often.
func ephemeralFigures() []figure {
	out := []figure{{"ephemeral_step_s", "ephemeral: duration of each step", "s", "", nil}}
	for _, v := range ephemeralVariants {
		label := "ephemeral, webhook"
		if !v.webhooks {
			label = fmt.Sprintf("ephemeral, polling every %g s", v.poll.Seconds())
		}
		zero, meetsZero := "", (func(float64) bool)(nil)
		if v.webhooks {
			zero, meetsZero = "0", atMost(0)
		}
		out = append(out,
			figure{v.key + "_steps", label + ": short steps run", "count", "", nil},
			figure{v.key + "_runners", label + ": runners that ran a step", "count", "", nil},
			figure{v.key + "_multi_step_runners", label + ": runners that ran more than one step", "count", zero, meetsZero},
			figure{v.key + "_extra_steps", label + ": second and later steps on a used runner", "count", zero, meetsZero},
			figure{v.key + "_disable_p50_s", label + ": step start to runner disabled, p50", "s", "", nil},
			figure{v.key + "_disable_p95_s", label + ": step start to runner disabled, p95", "s", "", nil},
			figure{v.key + "_disable_max_s", label + ": step start to runner disabled, max", "s", "", nil},
		)
	}
	return out
}

// results collects the figures of one run.
type results struct {
	values map[string]float64
	// extra holds JSON-only details (per-scenario safety counts, the run's settings).
	extra map[string]any
}

func newResults() *results {
	return &results{values: map[string]float64{}, extra: map[string]any{}}
}

func (r *results) set(key string, v float64) {
	if !knownFigure(key) {
		panic("unknown figure " + key)
	}
	r.values[key] = v
}

func (r *results) add(key string, v float64) {
	r.set(key, r.values[key]+v)
}

func knownFigure(key string) bool {
	for _, f := range figures {
		if f.key == key {
			return true
		}
	}
	return false
}

// writeJSON writes one flat object: every figure (null when its scenario did not run) and the
// extra details.
func (r *results) writeJSON(path string) error {
	out := map[string]any{}
	for k, v := range r.extra {
		out[k] = v
	}
	for _, f := range figures {
		v, ok := r.values[f.key]
		if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
			out[f.key] = nil
			continue
		}
		out[f.key] = round(v, 3)
	}
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create results directory: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// printTable prints the figures that were measured, with their targets.
func (r *results) printTable(w io.Writer, header string) {
	fmt.Fprintln(w, header)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tVALUE\tTARGET")
	section := ""
	for _, f := range figures {
		v, ok := r.values[f.key]
		if !ok {
			continue
		}
		if s := sectionOf(f.key); s != section && section != "" {
			fmt.Fprintln(tw, "\t\t")
		}
		section = sectionOf(f.key)
		verdict := ""
		if f.meets != nil && !math.IsNaN(v) {
			verdict = "  [met]"
			if !f.meets(v) {
				verdict = "  [MISSED]"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.label, formatValue(v, f.unit), strings.TrimSpace(f.target+verdict))
	}
	_ = tw.Flush()
	if len(r.extra) > 0 {
		keys := make([]string, 0, len(r.extra))
		for k := range r.extra {
			if strings.HasPrefix(k, "leaked_") || strings.HasPrefix(k, "busy_killed_") {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		var nonzero []string
		for _, k := range keys {
			if n, ok := r.extra[k].(int); ok && n != 0 {
				nonzero = append(nonzero, fmt.Sprintf("%s=%d", k, n))
			}
		}
		if len(nonzero) > 0 {
			fmt.Fprintln(w, "safety details:", strings.Join(nonzero, " "))
		}
	}
}

// sectionOf groups figures by scenario for the table: the first word of the key, safety for the
// totals.
func sectionOf(key string) string {
	if key == "busy_killed" || key == "leaked" {
		return "safety"
	}
	s, _, _ := strings.Cut(key, "_")
	return s
}

func formatValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	switch unit {
	case "count":
		return fmt.Sprintf("%d", int(math.Round(v)))
	case "s":
		return fmt.Sprintf("%.1f s", v)
	case "MiB":
		return fmt.Sprintf("%.0f MiB", v)
	case "ms":
		return fmt.Sprintf("%.1f ms", v)
	case "%":
		return fmt.Sprintf("%.1f %%", v)
	case "x":
		return fmt.Sprintf("%.1fx", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
