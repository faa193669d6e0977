package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Kinds of invariant violations.
const (
	violationMaxExceeded          = "max_runners_exceeded"
	violationMaxExceededBitbucket = "max_runners_exceeded_in_bitbucket"
	violationOrphan               = "bitbucket_runner_without_runner"
	violationVanished             = "runner_without_bitbucket_runner"
	violationPodLeak              = "pod_without_runner"
	violationSecretLeak           = "secret_without_runner"
	violationLeakedRunner         = "leaked_bitbucket_runner"
	violationLeakedRunnerObject   = "leaked_runner_object"
	violationPoolLeft             = "pool_not_deleted"
	violationBusyKilled           = "busy_runner_killed"
	violationStepFailedByUs       = "step_failed_by_operator"
	violationNotConverged         = "not_converged"
	violationDeletionStuck        = "pools_not_deleted_within_5_minutes"
	violationSecretInOutput       = "secret_in_output"
	violationInvalidAccepted      = "invalid_pool_accepted"
	violationUnclearRejection     = "invalid_pool_unclear_message"
	violationTenantStepsNotRun    = "tenant_good_steps_not_run"
	violationTenantWait           = "tenant_good_wait_p95_over_baseline"
	violationTenantHarmed         = "tenant_good_runner_harmed"
	violationTenantMemory         = "tenant_manager_memory_unbounded"
)

// results is test/chaos/results.json: one flat object. Counts are totals over the run; the
// load_* figures cover the load phase only.
type results struct {
	mu         sync.Mutex
	counts     map[string]int
	details    []string
	scenarios  []scenarioRow
	errorCount int
	say        func(format string, args ...any)

	Mode string `json:"mode"`
	// Phases is set when CHAOS_PHASES chose some phases only.
	Phases          string  `json:"phases,omitempty"`
	Seed            string  `json:"seed"`
	StartedAt       string  `json:"started_at"`
	DurationSeconds float64 `json:"duration_seconds"`
	Passed          bool    `json:"passed"`
	Violations      int     `json:"violations"`
	Errors          int     `json:"errors"`

	Converged           bool    `json:"converged"`
	ConvergenceChecks   int     `json:"convergence_checks"`
	ConvergenceFailures int     `json:"convergence_failures"`
	MaxConvergeSeconds  float64 `json:"max_converge_seconds"`

	ManagerKills          int     `json:"manager_kills"`
	KillsDuringScaleUp    int     `json:"kills_during_scale_up"`
	KillsDuringScaleDown  int     `json:"kills_during_scale_down"`
	KillsDuringDeletion   int     `json:"kills_during_pool_deletion"`
	KillsDuringLoad       int     `json:"kills_during_load"`
	ManagerSelfExits      int     `json:"manager_self_exits"`
	FailoverMaxSeconds    float64 `json:"failover_max_seconds"`
	FailoverMeanSeconds   float64 `json:"failover_mean_seconds"`
	FailoverP50Seconds    float64 `json:"failover_p50_seconds"`
	FailoverP95Seconds    float64 `json:"failover_p95_seconds"`
	BusyKilled            int     `json:"busy_killed"`
	LeakedRunners         int     `json:"leaked_runners"`
	LeakedPods            int     `json:"leaked_pods"`
	LeakedSecrets         int     `json:"leaked_secrets"`
	LeakedRunnerObjects   int     `json:"leaked_runner_objects"`
	PoolsNotDeleted       int     `json:"pools_not_deleted"`
	MaxRunnersExceeded    int     `json:"max_runners_exceeded"`
	MaxExceededBitbucket  int     `json:"max_runners_exceeded_in_bitbucket"`
	MappingViolations     int     `json:"mapping_violations"`
	SecretHitsInOutput    int     `json:"secret_hits_in_output"`
	SecretsSearched       int     `json:"secrets_searched"`
	FilesScanned          int     `json:"files_scanned"`
	BytesScanned          int64   `json:"bytes_scanned"`
	InvalidPoolsTried     int     `json:"invalid_pools_tried"`
	InvalidPoolsRejected  int     `json:"invalid_pools_rejected"`
	StepsTotal            int     `json:"steps_total"`
	StepsCompleted        int     `json:"steps_completed"`
	StepsFailedByUs       int     `json:"steps_failed_by_us"`
	StepsFailedByInjected int     `json:"steps_failed_by_injected_faults"`
	StepsUnfinished       int     `json:"steps_unfinished"`
	MaxQueueWaitSeconds   float64 `json:"max_queue_wait_seconds"`

	LoadPools               int     `json:"load_pools"`
	LoadSeconds             float64 `json:"load_seconds"`
	LoadStepsEnqueued       int     `json:"load_steps_enqueued"`
	LoadStepsCompleted      int     `json:"load_steps_completed"`
	LoadStepsFailedByUs     int     `json:"load_steps_failed_by_us"`
	LoadStepsFailedInjected int     `json:"load_steps_failed_by_injected_faults"`
	LoadMaxQueueWaitSeconds float64 `json:"load_max_queue_wait_seconds"`
	LoadP95QueueWaitSeconds float64 `json:"load_p95_queue_wait_seconds"`
	LoadAPICalls            int     `json:"load_api_calls"`
	LoadAPICallsPerMinute   float64 `json:"load_api_calls_per_minute"`
	LoadFaultWindows        int     `json:"load_fault_windows"`

	APICalls        int `json:"api_calls"`
	APIAnswersSeen  int `json:"api_answers_seen_by_operator"`
	API429Answers   int `json:"api_429_answers"`
	API5xxAnswers   int `json:"api_5xx_answers"`
	API401Answers   int `json:"api_401_answers"`
	APIDropped      int `json:"api_dropped_connections"`
	TokenGrants     int `json:"token_grants"`
	HourlyLimitHits int `json:"hourly_limit_hits"`
	// CredentialsOverLimit counts the operator's credentials bbsim refused calls for the hourly limit.
	CredentialsOverLimit int  `json:"credentials_over_hourly_limit"`
	HourlyLimitLifted    bool `json:"hourly_limit_lifted_to_finish_deletion"`
	WebhookDelivered     int  `json:"webhooks_delivered"`

	APIServerRestart         string  `json:"apiserver_restart"`
	APIServerDowntimeSeconds float64 `json:"apiserver_downtime_seconds"`
	PodsDeleted              int     `json:"pods_deleted"`
	PodsEvicted              int     `json:"pods_evicted"`
	NodesRemoved             int     `json:"nodes_removed"`
	OrphanedPodsCollected    int     `json:"orphaned_pods_collected"`
	ConflictWrites           int     `json:"conflict_writes"`
	ConflictsHitByWriter     int     `json:"conflicts_hit_by_writer"`
	OperatorConflictsLogged  int     `json:"operator_conflicts_logged"`
	RunnersDeletedBehindBack int     `json:"runners_deleted_behind_our_back"`
	RunnerLimitReported      bool    `json:"runner_limit_reported"`
	RenameRelabel            string  `json:"runner_rename_relabel"`
	// The tenant phase: the good tenant's figures, first alone (baseline) then next to the
	// hostile one.
	KillsDuringTenant         int     `json:"kills_during_tenant"`
	TenantGoodStepsRun        int     `json:"tenant_good_steps_run"`
	TenantGoodStepsTotal      int     `json:"tenant_good_steps_total"`
	TenantGoodWaitP95         float64 `json:"tenant_good_wait_p95_s"`
	TenantGoodWaitP95Baseline float64 `json:"tenant_good_wait_p95_baseline_s"`
	TenantGoodRunnersHarmed   int     `json:"tenant_good_runners_harmed"`
	TenantManagerRSSMiB       float64 `json:"tenant_manager_rss_mib"`
	TenantManagerRSSBeforeMiB float64 `json:"tenant_manager_rss_before_mib"`
	TenantWebhookDeliveries   int     `json:"tenant_webhook_deliveries"`
	TenantWebhookAnswers      string  `json:"tenant_webhook_answers"`
	TenantHostile             string  `json:"tenant_hostile"`
	MonitorSamples            int     `json:"monitor_samples"`
	MonitorSampleErrors       int     `json:"monitor_sample_errors"`
}

// scenarioRow is one line of the summary table.
type scenarioRow struct {
	name                       string
	kills                      int
	steps, ok, failedUs        int
	failedInjected, unfinished int
	maxWait                    time.Duration
	converged                  string
	violations                 int
	note                       string
}

func newResults(cfg settings) *results {
	mode := modeName(cfg)
	return &results{
		counts:           map[string]int{},
		Mode:             mode,
		Seed:             strconv.FormatUint(cfg.seed, 10),
		StartedAt:        time.Now().UTC().Format(time.RFC3339),
		Converged:        true,
		APIServerRestart: "not run",
		RenameRelabel:    "not run",
		TenantHostile:    "not run",
	}
}

// violation records a broken invariant; detail must never hold a secret.
func (res *results) violation(kind, detail string) {
	res.mu.Lock()
	res.counts[kind]++
	res.details = append(res.details, fmt.Sprintf("%s %s: %s", time.Now().Format("15:04:05"), kind, detail))
	res.mu.Unlock()
	if res.say != nil {
		res.say("VIOLATION %s: %s", kind, detail)
	}
}

func (res *results) fail(format string, args ...any) {
	res.mu.Lock()
	defer res.mu.Unlock()
	res.errorCount++
	res.details = append(res.details, fmt.Sprintf("%s error: %s", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...)))
}

func (res *results) violationCount() int {
	res.mu.Lock()
	defer res.mu.Unlock()
	n := 0
	for _, c := range res.counts {
		n += c
	}
	return n
}

func (res *results) addScenario(row scenarioRow) {
	res.mu.Lock()
	defer res.mu.Unlock()
	res.scenarios = append(res.scenarios, row)
}

// finish derives the invariant figures from the recorded violations and decides pass or fail.
func (res *results) finish() {
	res.mu.Lock()
	defer res.mu.Unlock()
	c := res.counts
	res.LeakedRunners = c[violationLeakedRunner]
	res.LeakedPods = c[violationPodLeak]
	res.LeakedSecrets = c[violationSecretLeak]
	res.LeakedRunnerObjects = c[violationLeakedRunnerObject]
	res.PoolsNotDeleted = c[violationPoolLeft]
	res.MaxRunnersExceeded = c[violationMaxExceeded]
	res.MaxExceededBitbucket = c[violationMaxExceededBitbucket]
	res.MappingViolations = c[violationOrphan] + c[violationVanished]
	res.ConvergenceFailures = c[violationNotConverged]
	res.Converged = res.ConvergenceFailures == 0 && res.ConvergenceChecks > 0
	res.Violations = 0
	for _, n := range c {
		res.Violations += n
	}
	res.Errors = res.errorCount
	res.Passed = res.Violations == 0 && res.Errors == 0 && res.Converged &&
		res.BusyKilled == 0 && res.StepsFailedByUs == 0 && res.SecretHitsInOutput == 0 &&
		(res.InvalidPoolsTried > 0 || res.Phases != "") && res.InvalidPoolsRejected == res.InvalidPoolsTried
}

func (res *results) write(path, tmp string) error {
	res.mu.Lock()
	defer res.mu.Unlock()
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	details := strings.Join(res.details, "\n")
	if details == "" {
		details = "no violations"
	}
	return os.WriteFile(filepath.Join(tmp, "violations.txt"), []byte(details+"\n"), 0o644)
}

func (r *run) printSummary() {
	res := r.res
	res.mu.Lock()
	defer res.mu.Unlock()
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tKILLS\tSTEPS\tOK\tFAILED(us)\tFAILED(injected)\tMAX WAIT\tCONVERGED\tVIOLATIONS\tNOTE")
	for _, s := range res.scenarios {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%d\t%s\n", s.name, s.kills, s.steps, s.ok, s.failedUs, s.failedInjected,
			s.maxWait.Round(time.Second), s.converged, s.violations, s.note)
	}
	_ = tw.Flush()
	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	figures := []struct {
		name  string
		value any
	}{
		{"manager kills (SIGKILL of the leader)", fmt.Sprintf("%d (scale-up %d, scale-down %d, deletion %d, load %d, tenant %d); failover p50 %.1fs, p95 %.1fs, max %.1fs, mean %.1fs; replicas that exited on their own %d",
			res.ManagerKills, res.KillsDuringScaleUp, res.KillsDuringScaleDown, res.KillsDuringDeletion, res.KillsDuringLoad, res.KillsDuringTenant,
			res.FailoverP50Seconds, res.FailoverP95Seconds, res.FailoverMaxSeconds, res.FailoverMeanSeconds, res.ManagerSelfExits)},
		{"busy runners killed", res.BusyKilled},
		{"steps", fmt.Sprintf("%d total, %d completed, %d failed by us, %d failed by injected faults, %d unfinished; max queue wait %.0fs",
			res.StepsTotal, res.StepsCompleted, res.StepsFailedByUs, res.StepsFailedByInjected, res.StepsUnfinished, res.MaxQueueWaitSeconds)},
		{"load", fmt.Sprintf("%d pools for %.0fs: %d steps, %d completed, %d failed by us, %d by injected faults; queue wait max %.0fs, p95 %.0fs; %d API calls (%.0f/min); %d fault windows",
			res.LoadPools, res.LoadSeconds, res.LoadStepsEnqueued, res.LoadStepsCompleted, res.LoadStepsFailedByUs, res.LoadStepsFailedInjected,
			res.LoadMaxQueueWaitSeconds, res.LoadP95QueueWaitSeconds, res.LoadAPICalls, res.LoadAPICallsPerMinute, res.LoadFaultWindows)},
		{"leaks", fmt.Sprintf("%d Bitbucket runners, %d pods, %d secrets, %d Runner objects, %d pools left", res.LeakedRunners, res.LeakedPods, res.LeakedSecrets, res.LeakedRunnerObjects, res.PoolsNotDeleted)},
		{"maxRunners exceeded", fmt.Sprintf("%d (Runner objects), %d (Bitbucket runners)", res.MaxRunnersExceeded, res.MaxExceededBitbucket)},
		{"Runner <-> Bitbucket mapping violations", res.MappingViolations},
		{"converged after every fault", fmt.Sprintf("%t (%d checks, %d failed, slowest %.0fs)", res.Converged, res.ConvergenceChecks, res.ConvergenceFailures, res.MaxConvergeSeconds)},
		{"invalid pools rejected", fmt.Sprintf("%d of %d", res.InvalidPoolsRejected, res.InvalidPoolsTried)},
		{"secret hits in output", fmt.Sprintf("%d (%d secret values searched in %d files, %.1f MB)", res.SecretHitsInOutput, res.SecretsSearched, res.FilesScanned, float64(res.BytesScanned)/1e6)},
		{"Bitbucket API", fmt.Sprintf("%d calls reached the API; the operator saw %d answers: %d 429, %d 5xx, %d 401, %d dropped; %d token grants; %d hourly-limit hits",
			res.APICalls, res.APIAnswersSeen, res.API429Answers, res.API5xxAnswers, res.API401Answers, res.APIDropped, res.TokenGrants, res.HourlyLimitHits)},
		{"credentials over Bitbucket's hourly limit", fmt.Sprintf("%d of %d (limit lifted to finish the deletion: %t)", res.CredentialsOverLimit, namespaceCount, res.HourlyLimitLifted)},
		{"Kubernetes faults", fmt.Sprintf("apiserver restart: %s (down %.1fs); %d pods deleted, %d evicted, %d nodes removed; %d concurrent writes (%d conflicts), %d conflicts logged by the operator",
			res.APIServerRestart, res.APIServerDowntimeSeconds, res.PodsDeleted, res.PodsEvicted, res.NodesRemoved, res.ConflictWrites, res.ConflictsHitByWriter, res.OperatorConflictsLogged)},
		{"runner limit (100) reported", res.RunnerLimitReported},
		{"runner renamed/relabelled", res.RenameRelabel},
		{"tenants", fmt.Sprintf("good steps %d of %d ran; queue wait p95 %.1fs next to the hostile tenant, %.1fs alone; %d good runners harmed; manager RSS %.0f MiB during the flood, %.0f MiB before; %d webhook deliveries",
			res.TenantGoodStepsRun, res.TenantGoodStepsTotal, res.TenantGoodWaitP95, res.TenantGoodWaitP95Baseline, res.TenantGoodRunnersHarmed,
			res.TenantManagerRSSMiB, res.TenantManagerRSSBeforeMiB, res.TenantWebhookDeliveries)},
		{"passed", res.Passed},
	}
	for _, f := range figures {
		fmt.Fprintf(tw, "%s\t%v\n", f.name, f.value)
	}
	_ = tw.Flush()
	if len(res.details) > 0 {
		b.WriteString("\nViolations and errors:\n")
		kinds := make([]string, 0, len(res.counts))
		for k := range res.counts {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			fmt.Fprintf(&b, "  %s: %d\n", k, res.counts[k])
		}
		for i, d := range res.details {
			if i == 40 {
				fmt.Fprintf(&b, "  ... %d more in test/chaos/tmp/violations.txt\n", len(res.details)-40)
				break
			}
			fmt.Fprintf(&b, "  %s\n", d)
		}
	}
	r.outMu.Lock()
	defer r.outMu.Unlock()
	fmt.Fprintf(r.out, "\n%s", b.String())
}
