package docs_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// metricDef is a metric as its Go definition states it.
type metricDef struct {
	Name   string
	Type   string // counter, gauge, histogram, summary; "" when the source does not say
	Labels []string
	Source string // file:line of the definition
}

// seriesSuffixes are the series a histogram or summary is scraped as besides its name.
var seriesSuffixes = map[string][]string{
	"histogram": {"_bucket", "_sum", "_count"},
	"summary":   {"_sum", "_count"},
}

// constructors maps the prometheus constructors to the type of what they make.
var constructors = map[string]string{
	"NewCounter": "counter", "NewCounterVec": "counter", "NewCounterFunc": "counter",
	"NewGauge": "gauge", "NewGaugeVec": "gauge", "NewGaugeFunc": "gauge",
	"NewHistogram": "histogram", "NewHistogramVec": "histogram",
	"NewSummary": "summary", "NewSummaryVec": "summary",
}

// constValueTypes maps the value types of const metrics (custom collectors) to metric types.
var constValueTypes = map[string]string{"GaugeValue": "gauge", "CounterValue": "counter"}

var (
	ownMetricsOnce sync.Once
	ownMetricsDefs map[string]metricDef
	ownMetricsErr  error

	runtimeMetricsOnce sync.Once
	runtimeMetricsDefs map[string]metricDef
	runtimeMetricsErr  error
)

// ownMetrics are the metrics the operator's code defines.
func ownMetrics(t *testing.T) map[string]metricDef {
	t.Helper()
	ownMetricsOnce.Do(func() {
		var files []string
		for _, dir := range []string{"internal", "controllers", "cmd"} {
			found, err := goFiles(repoPath(dir), func(string) bool { return true })
			if err != nil {
				ownMetricsErr = err
				return
			}
			files = append(files, found...)
		}
		ownMetricsDefs, ownMetricsErr = metricsDefinedIn(files, repoRoot(), true)
	})
	if ownMetricsErr != nil {
		t.Fatal(ownMetricsErr)
	}
	if len(ownMetricsDefs) == 0 {
		t.Fatal("found no metric definitions in the operator's source")
	}
	return ownMetricsDefs
}

// runtimeMetrics are the metrics of controller-runtime (reconciles, work queues, client-go
// requests), read from the module's source in the module cache.
func runtimeMetrics(t *testing.T) map[string]metricDef {
	t.Helper()
	runtimeMetricsOnce.Do(func() {
		cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/controller-runtime")
		cmd.Dir = repoRoot()
		out, err := cmd.Output()
		if err != nil {
			runtimeMetricsErr = fmt.Errorf("locate controller-runtime: %w", err)
			return
		}
		moduleDir := strings.TrimSpace(string(out))
		files, err := goFiles(filepath.Join(moduleDir, "pkg"), func(string) bool { return true })
		if err != nil {
			runtimeMetricsErr = err
			return
		}
		runtimeMetricsDefs, runtimeMetricsErr = metricsDefinedIn(files, moduleDir, false)
	})
	if runtimeMetricsErr != nil {
		t.Fatal(runtimeMetricsErr)
	}
	for _, name := range []string{"controller_runtime_reconcile_errors_total", "workqueue_depth"} {
		if _, ok := runtimeMetricsDefs[name]; !ok {
			t.Fatalf("controller-runtime's source no longer defines %s where this test looks for it", name)
		}
	}
	return runtimeMetricsDefs
}

// knownMetrics is every metric the manager's endpoint can serve that the tests know of.
func knownMetrics(t *testing.T) map[string]metricDef {
	t.Helper()
	all := map[string]metricDef{}
	for name, def := range runtimeMetrics(t) {
		all[name] = def
	}
	for name, def := range ownMetrics(t) {
		all[name] = def
	}
	return all
}

// lookupSeries finds the metric a series name belongs to: the metric itself, or a
// histogram's _bucket, _sum or _count.
func lookupSeries(known map[string]metricDef, series string) (metricDef, bool) {
	if def, ok := known[series]; ok {
		return def, true
	}
	for _, def := range known {
		for _, suffix := range seriesSuffixes[def.Type] {
			if series == def.Name+suffix {
				return def, true
			}
		}
	}
	return metricDef{}, false
}

// goFiles lists the non-test Go files below root in directories keep accepts.
func goFiles(root string, keep func(dir string) bool) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") && keep(filepath.Dir(path)) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list Go files in %s: %w", root, err)
	}
	return files, nil
}

// metricsDefinedIn finds the metrics the files define: prometheus.New* calls with an Opts
// literal, and prometheus.NewDesc for custom collectors. Names built from constants are
// resolved, within the package first, then by name across the files. strict makes a name
// that cannot be resolved (a function parameter, say) an error; otherwise the definition
// is skipped, which suits other modules' helpers.
func metricsDefinedIn(files []string, base string, strict bool) (map[string]metricDef, error) {
	fset := token.NewFileSet()
	type parsedFile struct {
		file *ast.File
		dir  string
	}
	var parsed []parsedFile
	consts := map[string]map[string]ast.Expr{} // package directory -> name -> value
	for _, path := range files {
		src, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
		dir := filepath.Dir(path)
		parsed = append(parsed, parsedFile{f, dir})
		if consts[dir] == nil {
			consts[dir] = map[string]ast.Expr{}
		}
		for _, decl := range f.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok != token.CONST {
				continue
			}
			for _, spec := range gen.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i < len(vs.Values) {
						consts[dir][name.Name] = vs.Values[i]
					}
				}
			}
		}
	}

	var resolve func(dir string, e ast.Expr, depth int) (string, error)
	resolve = func(dir string, e ast.Expr, depth int) (string, error) {
		if depth > 10 {
			return "", fmt.Errorf("constant chain too deep at %s", fset.Position(e.Pos()))
		}
		switch v := e.(type) {
		case *ast.BasicLit:
			if v.Kind != token.STRING {
				return "", fmt.Errorf("%s: not a string", fset.Position(v.Pos()))
			}
			return strconv.Unquote(v.Value)
		case *ast.BinaryExpr:
			if v.Op != token.ADD {
				return "", fmt.Errorf("%s: unsupported operator %s", fset.Position(v.Pos()), v.Op)
			}
			x, err := resolve(dir, v.X, depth+1)
			if err != nil {
				return "", err
			}
			y, err := resolve(dir, v.Y, depth+1)
			return x + y, err
		case *ast.Ident:
			if value, ok := consts[dir][v.Name]; ok {
				return resolve(dir, value, depth+1)
			}
			return resolveAnywhere(consts, v.Name, fset, v.Pos(), func(d string, x ast.Expr) (string, error) { return resolve(d, x, depth+1) })
		case *ast.SelectorExpr:
			return resolveAnywhere(consts, v.Sel.Name, fset, v.Pos(), func(d string, x ast.Expr) (string, error) { return resolve(d, x, depth+1) })
		}
		return "", fmt.Errorf("%s: cannot resolve %T to a string", fset.Position(e.Pos()), e)
	}

	defs := map[string]metricDef{}
	add := func(def metricDef) error {
		if prev, ok := defs[def.Name]; ok && (prev.Type != def.Type || !slices.Equal(prev.Labels, def.Labels)) {
			return fmt.Errorf("metric %s defined differently at %s and %s", def.Name, prev.Source, def.Source)
		}
		defs[def.Name] = def
		return nil
	}
	for _, pf := range parsed {
		// A custom collector's Desc does not say its type; the const metrics of the
		// same file do, when they all agree.
		descType := ""
		ast.Inspect(pf.file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || calleeName(call) != "MustNewConstMetric" && calleeName(call) != "NewConstMetric" || len(call.Args) < 2 {
				return true
			}
			if sel, ok := call.Args[1].(*ast.SelectorExpr); ok {
				typ := constValueTypes[sel.Sel.Name]
				if descType == "" {
					descType = typ
				} else if descType != typ {
					descType = "mixed"
				}
			}
			return true
		})
		if descType == "mixed" {
			descType = ""
		}

		var inspectErr error
		ast.Inspect(pf.file, func(n ast.Node) bool {
			if inspectErr != nil {
				if strict {
					return false
				}
				inspectErr = nil
			}
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			name := calleeName(call)
			rel, _ := filepath.Rel(base, fset.Position(call.Pos()).Filename)
			source := fmt.Sprintf("%s:%d", filepath.ToSlash(rel), fset.Position(call.Pos()).Line)
			switch {
			case constructors[name] != "" && len(call.Args) >= 1:
				opts, ok := call.Args[0].(*ast.CompositeLit)
				if !ok {
					return true
				}
				parts := map[string]string{}
				for _, elt := range opts.Elts {
					kv, ok := elt.(*ast.KeyValueExpr)
					if !ok {
						continue
					}
					key, ok := kv.Key.(*ast.Ident)
					if !ok || (key.Name != "Namespace" && key.Name != "Subsystem" && key.Name != "Name") {
						continue
					}
					value, err := resolve(pf.dir, kv.Value, 0)
					if err != nil {
						inspectErr = err
						return false
					}
					parts[key.Name] = value
				}
				if parts["Name"] == "" {
					return true
				}
				var labels []string
				if len(call.Args) >= 2 {
					var err error
					if labels, err = stringList(pf.dir, call.Args[1], resolve); err != nil {
						inspectErr = err
						return false
					}
				}
				inspectErr = add(metricDef{Name: fqName(parts["Namespace"], parts["Subsystem"], parts["Name"]), Type: constructors[name], Labels: labels, Source: source})
			case name == "NewDesc" && len(call.Args) >= 3:
				fq, err := descName(pf.dir, call.Args[0], resolve)
				if err != nil {
					inspectErr = err
					return false
				}
				labels, err := stringList(pf.dir, call.Args[2], resolve)
				if err != nil {
					inspectErr = err
					return false
				}
				inspectErr = add(metricDef{Name: fq, Type: descType, Labels: labels, Source: source})
			}
			return true
		})
		if inspectErr != nil && strict {
			return nil, inspectErr
		}
	}
	return defs, nil
}

// resolveAnywhere resolves a constant by name in whichever package defines it, and fails
// when two packages define it with different values.
func resolveAnywhere(consts map[string]map[string]ast.Expr, name string, fset *token.FileSet, pos token.Pos,
	resolve func(dir string, e ast.Expr) (string, error)) (string, error) {
	found := ""
	for _, dir := range slices.Sorted(maps.Keys(consts)) {
		value, ok := consts[dir][name]
		if !ok {
			continue
		}
		s, err := resolve(dir, value)
		if err != nil {
			continue
		}
		if found != "" && found != s {
			return "", fmt.Errorf("%s: constant %s is ambiguous (%q, %q)", fset.Position(pos), name, found, s)
		}
		found = s
	}
	if found == "" {
		return "", fmt.Errorf("%s: constant %s not found", fset.Position(pos), name)
	}
	return found, nil
}

func descName(dir string, e ast.Expr, resolve func(string, ast.Expr, int) (string, error)) (string, error) {
	if call, ok := e.(*ast.CallExpr); ok && calleeName(call) == "BuildFQName" && len(call.Args) == 3 {
		var parts [3]string
		for i, arg := range call.Args {
			s, err := resolve(dir, arg, 0)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return fqName(parts[0], parts[1], parts[2]), nil
	}
	return resolve(dir, e, 0)
}

func stringList(dir string, e ast.Expr, resolve func(string, ast.Expr, int) (string, error)) ([]string, error) {
	if ident, ok := e.(*ast.Ident); ok && ident.Name == "nil" {
		return nil, nil
	}
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil, fmt.Errorf("labels are not a []string literal")
	}
	var out []string
	for _, elt := range lit.Elts {
		s, err := resolve(dir, elt, 0)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// fqName joins the parts of a metric name as prometheus.BuildFQName does.
func fqName(namespace, subsystem, name string) string {
	var parts []string
	for _, p := range []string{namespace, subsystem, name} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "_")
}

func calleeName(call *ast.CallExpr) string {
	switch fn := call.Fun.(type) {
	case *ast.SelectorExpr:
		return fn.Sel.Name
	case *ast.Ident:
		return fn.Name
	}
	return ""
}

// The extractor must see what the code defines, or the other tests prove nothing.
func TestMetricSourceExtraction(t *testing.T) {
	own := ownMetrics(t)
	tests := []metricDef{
		{Name: "runnerpool_runners", Type: "gauge", Labels: []string{"namespace", "pool", "state"}},
		{Name: "runnerpool_step_wait_seconds", Type: "histogram", Labels: []string{"namespace", "pool"}},
		{Name: "runnerpool_bitbucket_requests_total", Type: "counter", Labels: []string{"endpoint", "method", "code"}},
		{Name: "runnerpool_bitbucket_budget_remaining", Type: "gauge", Labels: []string{"credential"}},
		{Name: "runnerpool_webhook_deliveries_total", Type: "counter", Labels: []string{"event", "outcome"}},
	}
	for _, want := range tests {
		t.Run(want.Name, func(t *testing.T) {
			got, ok := own[want.Name]
			if !ok {
				t.Fatalf("not found among %d definitions", len(own))
			}
			if got.Type != want.Type || !slices.Equal(got.Labels, want.Labels) {
				t.Errorf("got %s %v (%s), want %s %v", got.Type, got.Labels, got.Source, want.Type, want.Labels)
			}
		})
	}
	rt := runtimeMetrics(t)
	if def := rt["workqueue_depth"]; !slices.Contains(def.Labels, "name") {
		t.Errorf("workqueue_depth labels %v, want name among them", def.Labels)
	}
}
