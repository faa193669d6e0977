package docs_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// docRow is a metric as a table row of docs/metrics.md states it.
type docRow struct {
	Type   string
	Labels []string
}

var (
	docRowPattern   = regexp.MustCompile("^\\| `([a-zA-Z_:][a-zA-Z0-9_:]*)` \\| ([a-z]+) \\| ([^|]*) \\|")
	codeSpanPattern = regexp.MustCompile("`([^`]+)`")
)

func metricsDocRows(t *testing.T) map[string]docRow {
	t.Helper()
	rows := map[string]docRow{}
	for _, line := range strings.Split(string(readRepoFile(t, metricsDoc)), "\n") {
		m := docRowPattern.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if _, dup := rows[m[1]]; dup {
			t.Errorf("%s lists %s twice", metricsDoc, m[1])
		}
		var labels []string
		for _, l := range codeSpanPattern.FindAllStringSubmatch(m[3], -1) {
			labels = append(labels, l[1])
		}
		rows[m[1]] = docRow{Type: m[2], Labels: labels}
	}
	if len(rows) == 0 {
		t.Fatalf("%s has no metric tables", metricsDoc)
	}
	return rows
}

// Every metric the operator defines is documented, with the type and labels it has.
func TestMetricsDocListsEveryMetric(t *testing.T) {
	rows := metricsDocRows(t)
	for name, def := range ownMetrics(t) {
		t.Run(name, func(t *testing.T) {
			row, ok := rows[name]
			if !ok {
				t.Fatalf("%s (defined at %s) is missing from %s", name, def.Source, metricsDoc)
			}
			if row.Type != def.Type || !slices.Equal(row.Labels, def.Labels) {
				t.Errorf("%s says %s %v; %s defines %s %v", metricsDoc, row.Type, row.Labels, def.Source, def.Type, def.Labels)
			}
		})
	}
}

// Nothing documented is made up or out of date, controller-runtime's metrics included.
func TestMetricsDocListsOnlyDefinedMetrics(t *testing.T) {
	known := knownMetrics(t)
	for name, row := range metricsDocRows(t) {
		def, ok := known[name]
		if !ok {
			t.Errorf("%s documents %s, which no code defines", metricsDoc, name)
			continue
		}
		if row.Type != def.Type || !slices.Equal(row.Labels, def.Labels) {
			t.Errorf("%s says %s is %s %v; %s defines %s %v", metricsDoc, name, row.Type, row.Labels, def.Source, def.Type, def.Labels)
		}
	}
}

// promqlBlocks returns the queries of the ```promql blocks of a Markdown document: the
// paragraphs of each block, comments included (PromQL ignores them).
func promqlBlocks(markdown string) []string {
	var queries []string
	in := false
	var current []string
	flush := func() {
		if q := strings.TrimSpace(strings.Join(current, "\n")); q != "" && strings.Trim(stripComments(q), " \n") != "" {
			queries = append(queries, q)
		}
		current = nil
	}
	for _, line := range strings.Split(markdown, "\n") {
		switch {
		case strings.HasPrefix(line, "```promql"):
			in = true
		case in && strings.HasPrefix(line, "```"):
			flush()
			in = false
		case in && strings.TrimSpace(line) == "":
			flush()
		case in:
			current = append(current, line)
		}
	}
	return queries
}

func stripComments(query string) string {
	var kept []string
	for _, line := range strings.Split(query, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, "\n")
}

func TestMetricsDocQueriesUseDefinedMetrics(t *testing.T) {
	known := knownMetrics(t)
	queries := promqlBlocks(string(readRepoFile(t, metricsDoc)))
	if len(queries) < 10 {
		t.Fatalf("found %d example queries in %s, want at least 10", len(queries), metricsDoc)
	}
	for _, q := range queries {
		if _, err := checkSeries(known, q); err != nil {
			t.Errorf("%s query\n%s\n%v", metricsDoc, q, err)
		}
	}
}

// prometheusRule is the part of a rendered PrometheusRule the tests read.
type prometheusRule struct {
	Kind string `json:"kind"`
	Spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// renderedObjects splits helm template output into its objects, keyed by kind.
func renderedObjects(t *testing.T, manifests []byte) map[string][][]byte {
	t.Helper()
	objects := map[string][][]byte{}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifests)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objects
		}
		if err != nil {
			t.Fatal(err)
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, doc)
		}
		if meta.Kind != "" {
			objects[meta.Kind] = append(objects[meta.Kind], doc)
		}
	}
}

func renderPrometheusRule(t *testing.T, args ...string) prometheusRule {
	t.Helper()
	objects := renderedObjects(t, helmTemplate(t, append([]string{"--set", "prometheusRule.enabled=true"}, args...)...))
	if len(objects["PrometheusRule"]) != 1 {
		t.Fatalf("rendered %d PrometheusRules, want 1", len(objects["PrometheusRule"]))
	}
	var rule prometheusRule
	if err := yaml.Unmarshal(objects["PrometheusRule"][0], &rule); err != nil {
		t.Fatal(err)
	}
	return rule
}

// alertNames lists the alerts of a rendered rule in order.
func alertNames(rule prometheusRule) []string {
	var names []string
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
		}
	}
	return names
}

// documentedAlerts are the `### Name` headings of the Alerts section of docs/metrics.md.
func documentedAlerts(t *testing.T) []string {
	t.Helper()
	doc := string(readRepoFile(t, metricsDoc))
	_, alerts, ok := strings.Cut(doc, "\n## Alerts\n")
	if !ok {
		t.Fatalf("%s has no Alerts section", metricsDoc)
	}
	if next := strings.Index(alerts, "\n## "); next >= 0 {
		alerts = alerts[:next]
	}
	var names []string
	for _, line := range strings.Split(alerts, "\n") {
		if name, ok := strings.CutPrefix(line, "### "); ok {
			names = append(names, strings.TrimSpace(name))
		}
	}
	return names
}

func TestPrometheusRuleAlerts(t *testing.T) {
	known := knownMetrics(t)
	rule := renderPrometheusRule(t)
	names := alertNames(rule)
	if len(names) == 0 {
		t.Fatal("the PrometheusRule has no alerts")
	}
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			t.Run(r.Alert, func(t *testing.T) {
				if _, err := checkSeries(known, r.Expr); err != nil {
					t.Errorf("expr\n%s\n%v", r.Expr, err)
				}
				if !durationPattern.MatchString(r.For) {
					t.Errorf("for %q is not a Prometheus duration", r.For)
				}
				if r.Labels["severity"] == "" {
					t.Error("no severity label")
				}
				for _, key := range []string{"summary", "description", "runbook_url"} {
					if strings.TrimSpace(r.Annotations[key]) == "" {
						t.Errorf("no %s annotation", key)
					}
				}
				wantRunbook := "/docs/metrics.md#" + strings.ToLower(r.Alert)
				if !strings.HasSuffix(r.Annotations["runbook_url"], wantRunbook) {
					t.Errorf("runbook_url %q, want it to end in %s", r.Annotations["runbook_url"], wantRunbook)
				}
			})
		}
	}

	if documented := documentedAlerts(t); !slices.Equal(documented, names) {
		t.Errorf("%s documents the alerts %v; the chart has %v (same order, please)", metricsDoc, documented, names)
	}
	var schema struct {
		Properties struct {
			PrometheusRule struct {
				Properties struct {
					Disabled struct {
						Items struct {
							Enum []string `json:"enum"`
						} `json:"items"`
					} `json:"disabled"`
				} `json:"properties"`
			} `json:"prometheusRule"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(readRepoFile(t, chartDir+"/values.schema.json"), &schema); err != nil {
		t.Fatal(err)
	}
	if enum := schema.Properties.PrometheusRule.Properties.Disabled.Items.Enum; !slices.Equal(enum, names) {
		t.Errorf("values.schema.json lets prometheusRule.disabled name %v; the chart has %v", enum, names)
	}
}

func TestPrometheusRuleValues(t *testing.T) {
	t.Run("selector is added to every series", func(t *testing.T) {
		rule := renderPrometheusRule(t, "--set-string", `prometheusRule.selector=job="rp-metrics"`)
		for _, g := range rule.Spec.Groups {
			for _, r := range g.Rules {
				selectors, err := checkPromQL(r.Expr)
				if err != nil {
					t.Fatalf("%s: %v", r.Alert, err)
				}
				for _, sel := range selectors {
					if sel.matchers["job"] != "rp-metrics" {
						t.Errorf("%s: %s has matchers %v, want job=\"rp-metrics\" among them", r.Alert, sel.metric, sel.matchers)
					}
				}
			}
		}
	})
	t.Run("disabled alerts are left out", func(t *testing.T) {
		all := alertNames(renderPrometheusRule(t))
		left := alertNames(renderPrometheusRule(t, "--set", "prometheusRule.disabled={RunnerPoolPodsPending,RunnerPoolWebhookBadSignatures}"))
		want := slices.DeleteFunc(slices.Clone(all), func(n string) bool {
			return n == "RunnerPoolPodsPending" || n == "RunnerPoolWebhookBadSignatures"
		})
		if !slices.Equal(left, want) || len(want) != len(all)-2 {
			t.Errorf("alerts %v, want %v", left, want)
		}
	})
	t.Run("durations, thresholds and labels", func(t *testing.T) {
		rule := renderPrometheusRule(t, "--set", "prometheusRule.for.notReady=1h,prometheusRule.bitbucketErrorRatio=0.25,prometheusRule.requestBudgetThreshold=50,prometheusRule.severity=critical,prometheusRule.alertLabels.team=ci")
		for _, r := range rule.Spec.Groups[0].Rules {
			if r.Labels["severity"] != "critical" || r.Labels["team"] != "ci" {
				t.Errorf("%s labels %v, want severity critical and team ci", r.Alert, r.Labels)
			}
			switch r.Alert {
			case "RunnerPoolNotReady":
				if r.For != "1h" {
					t.Errorf("%s for %s, want 1h", r.Alert, r.For)
				}
			case "RunnerPoolBitbucketAPIErrors":
				if !strings.HasSuffix(strings.TrimSpace(r.Expr), "> 0.25") {
					t.Errorf("%s expr does not end in > 0.25:\n%s", r.Alert, r.Expr)
				}
			case "RunnerPoolRequestBudgetLow":
				if !strings.HasSuffix(strings.TrimSpace(r.Expr), "< 50") {
					t.Errorf("%s expr does not end in < 50:\n%s", r.Alert, r.Expr)
				}
			}
		}
	})
}

// grafanaDashboard is the part of the dashboard JSON the tests read.
type grafanaDashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaPanel struct {
	ID         int               `json:"id"`
	Type       string            `json:"type"`
	Title      string            `json:"title"`
	Datasource *grafanaReference `json:"datasource"`
	Targets    []struct {
		Expr       string            `json:"expr"`
		Datasource *grafanaReference `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaReference struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

var labelValuesPattern = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

func TestGrafanaDashboard(t *testing.T) {
	known := knownMetrics(t)
	raw := readRepoFile(t, dashboardRel)
	var dashboard grafanaDashboard
	if err := json.Unmarshal(raw, &dashboard); err != nil {
		t.Fatalf("%s does not parse: %v", dashboardRel, err)
	}
	if dashboard.UID == "" || dashboard.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}

	variables := map[string]bool{}
	for _, v := range dashboard.Templating.List {
		variables[v.Name] = true
		if v.Type != "query" {
			continue
		}
		var query struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &query); err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
			continue
		}
		m := labelValuesPattern.FindStringSubmatch(query.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is no label_values(selector, label)", v.Name, query.Query)
			continue
		}
		// The variables of these queries are inside matcher strings, where PromQL sees text.
		selectors, err := checkSeries(known, m[1])
		if err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
			continue
		}
		def, _ := lookupSeries(known, selectors[0].metric)
		if !slices.Contains(def.Labels, m[2]) {
			t.Errorf("variable %s reads label %s, which %s does not have", v.Name, m[2], def.Name)
		}
	}
	for _, name := range []string{"datasource", "namespace", "pool"} {
		if !variables[name] {
			t.Errorf("the dashboard has no %s variable", name)
		}
	}

	ids := map[int]string{}
	targets := 0
	var walk func(panels []grafanaPanel)
	walk = func(panels []grafanaPanel) {
		for _, p := range panels {
			if other, dup := ids[p.ID]; dup {
				t.Errorf("panels %q and %q share the id %d", other, p.Title, p.ID)
			}
			ids[p.ID] = p.Title
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q does not use the datasource variable", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, target := range p.Targets {
				targets++
				selectors, err := checkSeries(known, target.Expr)
				if err != nil {
					t.Errorf("panel %q: %v\n%s", p.Title, err, target.Expr)
					continue
				}
				// Pool series follow the namespace and pool the viewer picked.
				for _, sel := range selectors {
					def, _ := lookupSeries(known, sel.metric)
					if slices.Contains(def.Labels, "pool") &&
						(sel.matchers["namespace"] != "$namespace" || sel.matchers["pool"] != "$pool") {
						t.Errorf("panel %q: %s is not filtered by the namespace and pool variables", p.Title, sel.metric)
					}
				}
			}
		}
	}
	walk(dashboard.Panels)
	if targets == 0 {
		t.Fatal("the dashboard has no queries")
	}

	// Every metric of the operator is on the dashboard somewhere.
	text := string(raw)
	for name := range ownMetrics(t) {
		if !strings.Contains(text, name) {
			t.Errorf("the dashboard shows nothing of %s", name)
		}
	}
}

// The chart's ConfigMap carries the dashboard file unchanged.
func TestChartDashboardConfigMap(t *testing.T) {
	objects := renderedObjects(t, helmTemplate(t, "--set", "grafanaDashboard.enabled=true"))
	if len(objects["ConfigMap"]) != 1 {
		t.Fatalf("rendered %d ConfigMaps, want 1", len(objects["ConfigMap"]))
	}
	var cm struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(objects["ConfigMap"][0], &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Metadata.Labels["grafana_dashboard"] != "1" {
		t.Errorf("ConfigMap labels %v, want grafana_dashboard: \"1\"", cm.Metadata.Labels)
	}
	want := strings.TrimRight(string(readRepoFile(t, dashboardRel)), "\n")
	if got := cm.Data["runnerpool-operator.json"]; got != want {
		t.Errorf("the ConfigMap's dashboard differs from %s (%d bytes, want %d)", dashboardRel, len(got), len(want))
	}
}
