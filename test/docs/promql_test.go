package docs_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// This is not a PromQL parser: the module has none, and one is not worth a dependency for
// a test. It lexes an expression, checks that brackets nest, that label matchers and range
// durations are well formed and that every function is one PromQL has, and reports the
// series each selector names with its matchers. Together with the metric names found in
// the code that catches the mistakes that matter here: a misspelt metric, label or
// function, or a broken selector.

type tokenKind int

const (
	tokIdent tokenKind = iota
	tokNumber
	tokDuration
	tokString
	tokVariable // a Grafana variable such as $__rate_interval
	tokOperator
	tokOpen  // ( { [
	tokClose // ) } ]
	tokComma
	tokColon
)

type promToken struct {
	kind tokenKind
	text string
}

// selector is a series selector: a metric name and its label matchers.
type selector struct {
	metric   string
	matchers map[string]string // label -> value as written, quotes removed
}

var promFunctions = map[string]bool{
	"abs": true, "absent": true, "absent_over_time": true, "avg_over_time": true, "ceil": true,
	"changes": true, "clamp": true, "clamp_max": true, "clamp_min": true, "count_over_time": true,
	"day_of_month": true, "day_of_week": true, "day_of_year": true, "days_in_month": true,
	"delta": true, "deriv": true, "exp": true, "floor": true, "histogram_avg": true,
	"histogram_count": true, "histogram_fraction": true, "histogram_quantile": true,
	"histogram_sum": true, "hour": true, "idelta": true, "increase": true, "irate": true,
	"label_join": true, "label_replace": true, "last_over_time": true, "ln": true, "log10": true,
	"log2": true, "max_over_time": true, "min_over_time": true, "minute": true, "month": true,
	"predict_linear": true, "present_over_time": true, "quantile_over_time": true, "rate": true,
	"resets": true, "round": true, "scalar": true, "sgn": true, "sort": true, "sort_desc": true,
	"sqrt": true, "stddev_over_time": true, "stdvar_over_time": true, "sum_over_time": true,
	"time": true, "timestamp": true, "vector": true, "year": true,
}

var promAggregators = map[string]bool{
	"sum": true, "avg": true, "min": true, "max": true, "count": true, "stddev": true,
	"stdvar": true, "topk": true, "bottomk": true, "quantile": true, "count_values": true,
	"group": true,
}

var promSetOperators = map[string]bool{"and": true, "or": true, "unless": true}

// promLabelLists are keywords followed by a parenthesised list of label names.
var promLabelLists = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

var durationPattern = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)

func lexPromQL(expr string) ([]promToken, error) {
	var out []promToken
	rs := []rune(expr)
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case unicode.IsSpace(r):
			i++
		case r == '#':
			for i < len(rs) && rs[i] != '\n' {
				i++
			}
		case r == '_' || unicode.IsLetter(r):
			j := i
			for j < len(rs) && (rs[j] == '_' || rs[j] == ':' || unicode.IsLetter(rs[j]) || unicode.IsDigit(rs[j])) {
				j++
			}
			out = append(out, promToken{tokIdent, string(rs[i:j])})
			i = j
		case unicode.IsDigit(r) || r == '.' && i+1 < len(rs) && unicode.IsDigit(rs[i+1]):
			j := i
			for j < len(rs) && (unicode.IsDigit(rs[j]) || rs[j] == '.') {
				j++
			}
			if j < len(rs) && (rs[j] == 'e' || rs[j] == 'E') && j+1 < len(rs) && (unicode.IsDigit(rs[j+1]) || rs[j+1] == '-' || rs[j+1] == '+') {
				j += 2
				for j < len(rs) && unicode.IsDigit(rs[j]) {
					j++
				}
			}
			kind := tokNumber
			if j < len(rs) && unicode.IsLetter(rs[j]) {
				for j < len(rs) && (unicode.IsLetter(rs[j]) || unicode.IsDigit(rs[j])) {
					j++
				}
				kind = tokDuration
				if !durationPattern.MatchString(string(rs[i:j])) {
					return nil, fmt.Errorf("bad duration %q", string(rs[i:j]))
				}
			}
			out = append(out, promToken{kind, string(rs[i:j])})
			i = j
		case r == '"' || r == '\'' || r == '`':
			j := i + 1
			for j < len(rs) && rs[j] != r {
				if rs[j] == '\\' && r != '`' {
					j++
				}
				j++
			}
			if j >= len(rs) {
				return nil, fmt.Errorf("unterminated string starting %q", string(rs[i:min(i+20, len(rs))]))
			}
			out = append(out, promToken{tokString, string(rs[i+1 : j])})
			i = j + 1
		case r == '$':
			j := i + 1
			if j < len(rs) && rs[j] == '{' {
				for j < len(rs) && rs[j] != '}' {
					j++
				}
				j++
			} else {
				for j < len(rs) && (rs[j] == '_' || unicode.IsLetter(rs[j]) || unicode.IsDigit(rs[j])) {
					j++
				}
			}
			out = append(out, promToken{tokVariable, string(rs[i:j])})
			i = j
		case strings.ContainsRune("({[", r):
			out = append(out, promToken{tokOpen, string(r)})
			i++
		case strings.ContainsRune(")}]", r):
			out = append(out, promToken{tokClose, string(r)})
			i++
		case r == ',':
			out = append(out, promToken{tokComma, ","})
			i++
		case r == ':':
			out = append(out, promToken{tokColon, ":"})
			i++
		default:
			op := ""
			for _, candidate := range []string{"==", "!=", ">=", "<=", "=~", "!~", "=", ">", "<", "+", "-", "*", "/", "%", "^", "@"} {
				if strings.HasPrefix(string(rs[i:]), candidate) {
					op = candidate
					break
				}
			}
			if op == "" {
				return nil, fmt.Errorf("unexpected character %q", r)
			}
			out = append(out, promToken{tokOperator, op})
			i += len([]rune(op))
		}
	}
	return out, nil
}

// checkPromQL checks expr and returns its series selectors.
func checkPromQL(expr string) ([]selector, error) {
	tokens, err := lexPromQL(expr)
	if err != nil {
		return nil, err
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("empty expression")
	}
	var selectors []selector
	var parens []string
	closing := map[string]string{"(": ")", "{": "}", "[": "]"}
	peek := func(i int) promToken {
		if i < len(tokens) {
			return tokens[i]
		}
		return promToken{kind: -1}
	}
	for i := 0; i < len(tokens); i++ {
		tok := tokens[i]
		switch {
		case tok.kind == tokOpen && tok.text == "(":
			parens = append(parens, "(")
		case tok.kind == tokOpen && tok.text == "{":
			matchers, next, err := parseMatchers(tokens, i)
			if err != nil {
				return nil, err
			}
			if prev := peekBack(tokens, i); prev.kind == tokIdent && len(selectors) > 0 && selectors[len(selectors)-1].metric == prev.text {
				selectors[len(selectors)-1].matchers = matchers
			} else {
				name, ok := matchers["__name__"]
				if !ok {
					return nil, fmt.Errorf("selector without a metric name")
				}
				selectors = append(selectors, selector{metric: name, matchers: matchers})
			}
			i = next
		case tok.kind == tokOpen && tok.text == "[":
			next, err := parseRange(tokens, i)
			if err != nil {
				return nil, err
			}
			i = next
		case tok.kind == tokClose:
			if len(parens) == 0 || closing[parens[len(parens)-1]] != tok.text {
				return nil, fmt.Errorf("unbalanced %q", tok.text)
			}
			parens = parens[:len(parens)-1]
		case tok.kind == tokIdent && promLabelLists[tok.text]:
			if next := peek(i + 1); next.kind == tokOpen && next.text == "(" {
				j := i + 2
				for ; j < len(tokens) && !(tokens[j].kind == tokClose && tokens[j].text == ")"); j++ {
					if tokens[j].kind != tokIdent && tokens[j].kind != tokComma {
						return nil, fmt.Errorf("%s list holds %q, not a label name", tok.text, tokens[j].text)
					}
				}
				if j == len(tokens) {
					return nil, fmt.Errorf("unterminated %s list", tok.text)
				}
				i = j
			} else if tok.text != "group_left" && tok.text != "group_right" {
				return nil, fmt.Errorf("%s without a label list", tok.text)
			}
		case tok.kind == tokIdent && (promSetOperators[tok.text] || tok.text == "bool" || tok.text == "offset"):
		case tok.kind == tokIdent && promAggregators[tok.text]:
			if next := peek(i + 1); !(next.kind == tokOpen && next.text == "(") && !(next.kind == tokIdent && (next.text == "by" || next.text == "without")) {
				return nil, fmt.Errorf("aggregation %s without arguments", tok.text)
			}
		case tok.kind == tokIdent && peek(i+1).kind == tokOpen && peek(i+1).text == "(":
			if !promFunctions[tok.text] {
				return nil, fmt.Errorf("unknown function %s", tok.text)
			}
		case tok.kind == tokIdent:
			selectors = append(selectors, selector{metric: tok.text})
		case tok.kind == tokVariable:
			return nil, fmt.Errorf("variable %s outside a range or a string", tok.text)
		}
	}
	if len(parens) > 0 {
		return nil, fmt.Errorf("unclosed %q", parens[len(parens)-1])
	}
	return selectors, nil
}

func peekBack(tokens []promToken, i int) promToken {
	if i > 0 {
		return tokens[i-1]
	}
	return promToken{kind: -1}
}

// parseMatchers reads `{label op "value", ...}` from the brace at i; it returns the
// matchers and the index of the closing brace.
func parseMatchers(tokens []promToken, i int) (map[string]string, int, error) {
	matchers := map[string]string{}
	j := i + 1
	for {
		if j < len(tokens) && tokens[j].kind == tokClose && tokens[j].text == "}" {
			return matchers, j, nil
		}
		if j+2 >= len(tokens) || tokens[j].kind != tokIdent || tokens[j+1].kind != tokOperator || tokens[j+2].kind != tokString {
			return nil, 0, fmt.Errorf("bad label matcher near %q", tokenText(tokens, j))
		}
		if op := tokens[j+1].text; op != "=" && op != "!=" && op != "=~" && op != "!~" {
			return nil, 0, fmt.Errorf("bad matcher operator %q", op)
		}
		if _, dup := matchers[tokens[j].text]; dup {
			return nil, 0, fmt.Errorf("label %s matched twice", tokens[j].text)
		}
		matchers[tokens[j].text] = tokens[j+2].text
		j += 3
		if j < len(tokens) && tokens[j].kind == tokComma {
			j++
		}
	}
}

// parseRange reads `[duration]` or a subquery `[duration:step]` from the bracket at i and
// returns the index of the closing bracket.
func parseRange(tokens []promToken, i int) (int, error) {
	j := i + 1
	isDuration := func(k int) bool {
		return k < len(tokens) && (tokens[k].kind == tokDuration || tokens[k].kind == tokVariable)
	}
	if !isDuration(j) {
		return 0, fmt.Errorf("range without a duration near %q", tokenText(tokens, j))
	}
	j++
	if j < len(tokens) && tokens[j].kind == tokColon {
		j++
		if isDuration(j) {
			j++
		}
	}
	if j >= len(tokens) || tokens[j].kind != tokClose || tokens[j].text != "]" {
		return 0, fmt.Errorf("bad range near %q", tokenText(tokens, j))
	}
	return j, nil
}

func tokenText(tokens []promToken, i int) string {
	var parts []string
	for k := i; k < len(tokens) && k < i+3; k++ {
		parts = append(parts, tokens[k].text)
	}
	return strings.Join(parts, " ")
}

// targetLabels are the labels Prometheus adds to every series of a scrape target.
var targetLabels = []string{"job", "instance", "namespace", "pod", "service", "container", "endpoint", "exported_namespace"}

// checkSeries checks that every selector of expr names a known metric and matches only
// labels it has (or labels of the scrape target).
func checkSeries(known map[string]metricDef, expr string) ([]selector, error) {
	selectors, err := checkPromQL(expr)
	if err != nil {
		return nil, err
	}
	for _, sel := range selectors {
		def, ok := lookupSeries(known, sel.metric)
		if !ok {
			return nil, fmt.Errorf("no metric %s is defined in the code", sel.metric)
		}
		for label := range sel.matchers {
			if label != "__name__" && !slices.Contains(def.Labels, label) && !slices.Contains(targetLabels, label) {
				return nil, fmt.Errorf("%s has no label %s (it has %v)", sel.metric, label, def.Labels)
			}
		}
	}
	return selectors, nil
}

func TestPromQLChecker(t *testing.T) {
	known := map[string]metricDef{
		"runnerpool_runners":           {Name: "runnerpool_runners", Type: "gauge", Labels: []string{"namespace", "pool", "state"}},
		"runnerpool_step_wait_seconds": {Name: "runnerpool_step_wait_seconds", Type: "histogram", Labels: []string{"namespace", "pool"}},
	}
	tests := []struct {
		name, expr string
		wantErr    string // empty: valid
	}{
		{"plain selector", `runnerpool_runners`, ""},
		{"matchers", `runnerpool_runners{state="stuck", pool=~"a|b",} > 0`, ""},
		{"aggregation with label list", `sum without (state) (runnerpool_runners{state=~"busy|idle"}) > 0`, ""},
		{"histogram bucket and range", `histogram_quantile(0.9, sum by (le) (rate(runnerpool_step_wait_seconds_bucket[5m])))`, ""},
		{"grafana range variable", `rate(runnerpool_step_wait_seconds_count[$__rate_interval])`, ""},
		{"set operator and comments", "runnerpool_runners # all\nunless\nrunnerpool_runners{state=\"idle\"}", ""},
		{"subquery", `max_over_time(runnerpool_runners[1h:5m])`, ""},
		{"unknown metric", `runnerpool_runner`, "no metric runnerpool_runner"},
		{"suffix of a gauge", `runnerpool_runners_bucket`, "no metric runnerpool_runners_bucket"},
		{"unknown label", `runnerpool_runners{stat="stuck"}`, "has no label stat"},
		{"target label", `runnerpool_runners{job="x"}`, ""},
		{"misspelt function", `rat(runnerpool_runners[5m])`, "unknown function rat"},
		{"unbalanced parenthesis", `sum(runnerpool_runners`, "unclosed"},
		{"wrong closing bracket", `sum(runnerpool_runners]`, "unbalanced"},
		{"unterminated string", `runnerpool_runners{state="stuck}`, "unterminated string"},
		{"matcher without value", `runnerpool_runners{state=}`, "bad label matcher"},
		{"range without unit", `rate(runnerpool_runners[5])`, "range without a duration"},
		{"bad duration unit", `rate(runnerpool_runners[5x])`, "bad duration"},
		{"variable outside a range", `runnerpool_runners > $threshold`, "variable"},
		{"empty", `  `, "empty expression"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := checkSeries(known, tt.expr)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("checkSeries(%q) = %v, want no error", tt.expr, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("checkSeries(%q) = %v, want an error containing %q", tt.expr, err, tt.wantErr)
			}
		})
	}
}
