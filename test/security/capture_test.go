package security_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// needle is a secret value the captures must not contain. what names it in failure messages,
// which never show the value.
type needle struct {
	what  string
	value string
}

// needlesFor is a secret and the encodings it would show up in: base64 is how a Secret's data
// prints, and how a Basic Authorization header carries it.
func needlesFor(what, value string) []needle {
	return []needle{
		{what: what, value: value},
		{what: what + " (base64)", value: base64.StdEncoding.EncodeToString([]byte(value))},
	}
}

// basicAuthNeedle is the Authorization header value of a client id and secret.
func basicAuthNeedle(what, id, secret string) needle {
	return needle{what: what + " (Basic Authorization header)", value: base64.StdEncoding.EncodeToString([]byte(id + ":" + secret))}
}

// findLeaks counts every needle in every capture and describes each leak by what leaked, where
// and how often.
func findLeaks(captures map[string]string, needles []needle) []string {
	var leaks []string
	for _, source := range slices.Sorted(maps.Keys(captures)) {
		text := captures[source]
		for _, n := range needles {
			if n.value == "" {
				continue
			}
			if count := strings.Count(text, n.value); count > 0 {
				leaks = append(leaks, fmt.Sprintf("%s appears %d times in %s", n.what, count, source))
			}
		}
	}
	return leaks
}

// credentialShapes catch an Authorization header or a token field printed anywhere, whatever
// its value: a leak of a credential the test did not know about.
var credentialShapes = map[string]*regexp.Regexp{
	"an Authorization header value": regexp.MustCompile(`\b(Bearer|Basic) [A-Za-z0-9._~+/=-]{16,}`),
	"a token or secret field":       regexp.MustCompile(`(?i)"?(access_token|refresh_token|client_secret|clientSecret|password)"?[ \t]*[:=][ \t]*"?[A-Za-z0-9._~+/=-]{8,}`),
}

// findShapes counts the credential shapes in every capture.
func findShapes(captures map[string]string) []string {
	var leaks []string
	for _, source := range slices.Sorted(maps.Keys(captures)) {
		for _, what := range slices.Sorted(maps.Keys(credentialShapes)) {
			if count := len(credentialShapes[what].FindAllStringIndex(captures[source], -1)); count > 0 {
				leaks = append(leaks, fmt.Sprintf("%s appears %d times in %s", what, count, source))
			}
		}
	}
	return leaks
}

// bitbucketTraffic records, from bbsim's answers, every credential Bitbucket hands out: the
// access and refresh tokens of the OAuth grant, and the OAuth client secret of each runner it
// registers. Neither the simulator's state nor the cluster shows all of them.
type bitbucketTraffic struct {
	mu            sync.Mutex
	tokens        []string
	runnerSecrets []string
	bearerCalls   int
}

func (b *bitbucketTraffic) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &teeResponse{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		var answer struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
			OAuthClient  *struct {
				Secret string `json:"secret"`
			} `json:"oauth_client"`
		}
		_ = json.Unmarshal(rec.body.Bytes(), &answer)
		b.mu.Lock()
		defer b.mu.Unlock()
		if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			b.bearerCalls++
		}
		for _, token := range []string{answer.AccessToken, answer.RefreshToken} {
			if token != "" {
				b.tokens = append(b.tokens, token)
			}
		}
		if answer.OAuthClient != nil && answer.OAuthClient.Secret != "" {
			b.runnerSecrets = append(b.runnerSecrets, answer.OAuthClient.Secret)
		}
	})
}

func (b *bitbucketTraffic) snapshot() (tokens, runnerSecrets []string, bearerCalls int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.tokens), slices.Clone(b.runnerSecrets), b.bearerCalls
}

// teeResponse keeps a copy of the body it passes on.
type teeResponse struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (t *teeResponse) Write(p []byte) (int, error) {
	t.body.Write(p)
	return t.ResponseWriter.Write(p)
}

// objectRecorder keeps every version of the objects it watches, as YAML, so a status written
// and overwritten a moment later is still scanned.
type objectRecorder struct {
	mu       sync.Mutex
	versions map[string]*strings.Builder // by kind
	count    int
}

func newObjectRecorder() *objectRecorder {
	return &objectRecorder{versions: map[string]*strings.Builder{}}
}

// watch records the objects of list until ctx ends; onEvent, when set, sees each change too.
func (o *objectRecorder) watch(ctx context.Context, t *testing.T, c client.WithWatch, kind string, list client.ObjectList, onEvent func(watch.EventType, client.Object), opts ...client.ListOption) {
	t.Helper()
	w, err := c.Watch(ctx, list, opts...)
	if err != nil {
		t.Fatalf("watch %s: %v", kind, err)
	}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error || ev.Type == watch.Bookmark {
				continue
			}
			obj, ok := ev.Object.(client.Object)
			if !ok {
				continue
			}
			if onEvent != nil {
				onEvent(ev.Type, obj)
			}
			o.add(kind, obj)
		}
	}()
}

func (o *objectRecorder) add(kind string, obj any) {
	b, err := yaml.Marshal(obj)
	if err != nil {
		b = []byte(fmt.Sprintf("unmarshallable %T: %v", obj, err))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.versions[kind] == nil {
		o.versions[kind] = &strings.Builder{}
	}
	o.versions[kind].WriteString("---\n")
	o.versions[kind].Write(b)
	o.count++
}

func (o *objectRecorder) captures(into map[string]string, prefix string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for kind, b := range o.versions {
		into[prefix+kind] = b.String()
	}
}

// metricsText renders every series of the registries, names, label names and values, as a
// scrape would show them.
func metricsText(t *testing.T, gatherers ...prometheus.Gatherer) string {
	t.Helper()
	var out strings.Builder
	for _, g := range gatherers {
		families, err := g.Gather()
		if err != nil {
			t.Fatalf("gather metrics: %v", err)
		}
		for _, family := range families {
			for _, m := range family.GetMetric() {
				out.WriteString(family.GetName())
				out.WriteString(renderLabels(m.GetLabel()))
				fmt.Fprintf(&out, " %v\n", metricValue(m))
			}
		}
	}
	return out.String()
}

func renderLabels(labels []*dto.LabelPair) string {
	if len(labels) == 0 {
		return ""
	}
	parts := make([]string, 0, len(labels))
	for _, l := range labels {
		parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	case m.GetSummary() != nil:
		return float64(m.GetSummary().GetSampleCount())
	}
	return m.GetUntyped().GetValue()
}

// counterValue is the value of the series of name with exactly these labels, 0 when absent.
func counterValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, family := range families {
		if family.GetName() != name {
			continue
		}
	series:
		for _, m := range family.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			return metricValue(m)
		}
	}
	return 0
}

// readAll drains and closes a response body.
func readAll(t *testing.T, r io.ReadCloser) string {
	t.Helper()
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return string(b)
}

// The scanner itself, on text with and without leaks, so that a passing scan means something.
func TestScannerFindsLeaks(t *testing.T) {
	const secret = "s3cr3t-value-0123456789abcdef"
	needles := append(needlesFor("the secret", secret), basicAuthNeedle("the client", "id", secret))
	tests := []struct {
		name       string
		text       string
		wantLeaks  bool
		wantShapes bool
	}{
		{name: "clean log line", text: `"level"=0 "msg"="bitbucket request" "endpoint"="runners.list" "status"=200`},
		{name: "pool named basic", text: "labels:\n  ci.runnerpool.dev/pool: basic\n    ci.runnerpool.dev/runner: basic-x"},
		{name: "the secret itself", text: "error: invalid client " + secret, wantLeaks: true},
		{name: "the secret as Secret data", text: "data:\n  clientSecret: " + base64.StdEncoding.EncodeToString([]byte(secret)), wantLeaks: true, wantShapes: true},
		{name: "a Basic header", text: "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("id:"+secret)), wantLeaks: true, wantShapes: true},
		{name: "an unknown Bearer token", text: `header "Authorization"="Bearer 9f8e7d6c5b4a39281706f5e4"`, wantShapes: true},
		{name: "a token field", text: `{"access_token": "9f8e7d6c5b4a3928"}`, wantShapes: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			captures := map[string]string{"capture": tt.text}
			if got := len(findLeaks(captures, needles)) > 0; got != tt.wantLeaks {
				t.Errorf("findLeaks found a leak = %v, want %v", got, tt.wantLeaks)
			}
			if got := len(findShapes(captures)) > 0; got != tt.wantShapes {
				t.Errorf("findShapes found a credential shape = %v, want %v", got, tt.wantShapes)
			}
		})
	}
}
