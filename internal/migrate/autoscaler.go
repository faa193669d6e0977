// Package migrate turns the configuration of Atlassian's runners-autoscaler (its
// runners_config.yaml) into RunnerPools. It is pure: the runnerpoolctl command reads the file
// and writes what Convert returns.
//
// The format, from the autoscaler's documentation and templates: a `groups` list (at most 10),
// each with a `name`, a `workspace` and optional `repository` (names in current releases, UUIDs
// in early ones), `labels`, the Kubernetes `namespace` of its runner jobs, `strategy`
// (`percentageRunnersIdle`, the only one) and `parameters` (`min`, `max`, `scaleUpThreshold`,
// `scaleDownThreshold`, `scaleUpMultiplier`, `scaleDownMultiplier`; snake_case spellings are seen
// in the wild too), optional job `resources`; and `constants` in seconds
// (`runner_api_polling_interval`, `runner_cool_down_period`, and two sleeps between API calls).
// The file is often kept inside the autoscaler's ConfigMap, under the key runners_config.yaml;
// Convert accepts either.
package migrate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// Facts of runners-autoscaler.
const (
	// strategyPercentageIdle is its one scaling strategy.
	strategyPercentageIdle = "percentageRunnersIdle"
	// markerLabel is the label it adds to the runners it creates; the operator marks its runners
	// by name instead.
	markerLabel = "autoscaler.created"
	// configKey is the key of its ConfigMap that holds the file.
	configKey = "runners_config.yaml"
	// maxGroups is its limit of groups per file.
	maxGroups = 10
)

// Options steer the conversion.
type Options struct {
	// UUIDs maps workspace and repository names to their UUIDs (with braces): current releases
	// of the autoscaler take names and look the UUIDs up, a RunnerPool names UUIDs.
	UUIDs map[string]string
	// SecretName is the credentials Secret every pool refers to.
	SecretName string
	// Namespace, when set, replaces every group's namespace.
	Namespace string
}

// Result is what the conversion produced.
type Result struct {
	Pools []*v1alpha1.RunnerPool
	// Notes tell the user what was mapped approximately or left out.
	Notes []string
	// Namespaces are the namespaces the pools are in, each needing the credentials Secret.
	Namespaces []string
}

type config struct {
	Groups    []group   `json:"groups"`
	Constants constants `json:"constants"`
}

type constants struct {
	PollInterval *number `json:"runner_api_polling_interval"`
	CoolDown     *number `json:"runner_cool_down_period"`
}

type group struct {
	Name       string     `json:"name"`
	Workspace  string     `json:"workspace"`
	Repository string     `json:"repository"`
	Labels     []string   `json:"labels"`
	Namespace  string     `json:"namespace"`
	Strategy   string     `json:"strategy"`
	Parameters parameters `json:"parameters"`
	Resources  *resources `json:"resources"`
}

type resources struct {
	Requests map[string]string `json:"requests"`
	Limits   map[string]string `json:"limits"`
}

// parameters accepts the documented camelCase names and the snake_case ones.
type parameters struct {
	Min                      *number `json:"min"`
	Max                      *number `json:"max"`
	ScaleUpThreshold         *number `json:"scaleUpThreshold"`
	ScaleUpThresholdSnake    *number `json:"scale_up_threshold"`
	ScaleDownThreshold       *number `json:"scaleDownThreshold"`
	ScaleDownThresholdSnake  *number `json:"scale_down_threshold"`
	ScaleUpMultiplier        *number `json:"scaleUpMultiplier"`
	ScaleUpMultiplierSnake   *number `json:"scale_up_multiplier"`
	ScaleDownMultiplier      *number `json:"scaleDownMultiplier"`
	ScaleDownMultiplierSnake *number `json:"scale_down_multiplier"`
}

// number is a YAML number, quoted or not.
type number struct{ text string }

func (n *number) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if unquoted, err := strconv.Unquote(s); err == nil {
		s = strings.TrimSpace(unquoted)
	}
	if _, err := strconv.ParseFloat(s, 64); err != nil {
		return fmt.Errorf("%s is not a number", b)
	}
	n.text = s
	return nil
}

func (n *number) float() float64 {
	f, _ := strconv.ParseFloat(n.text, 64)
	return f
}

// Convert reads runners_config.yaml (or the ConfigMap holding it) and returns one RunnerPool per
// group. It fails on what cannot be converted faithfully, naming the group and the field.
func Convert(data []byte, opts Options) (*Result, error) {
	data, err := unwrapConfigMap(data)
	if err != nil {
		return nil, err
	}
	var cfg config
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("read runners_config.yaml: %w", err)
	}
	if len(cfg.Groups) == 0 {
		return nil, errors.New("runners_config.yaml has no groups")
	}
	if len(cfg.Groups) > maxGroups {
		return nil, fmt.Errorf("runners_config.yaml has %d groups; runners-autoscaler allows %d", len(cfg.Groups), maxGroups)
	}
	if opts.SecretName == "" {
		opts.SecretName = "bitbucket-credentials"
	}
	res := &Result{}
	if cfg.Constants.PollInterval != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("runner_api_polling_interval %ss is not copied: the pools poll every 15s (spec.scaling.pollInterval), "+
			"because the operator makes one runner list per workspace or repository per poll for all its pools, and stretches polls itself when the request budget runs low",
			cfg.Constants.PollInterval.text))
	}
	var scaleDownDelay *metav1.Duration
	if cfg.Constants.CoolDown != nil {
		d := time.Duration(cfg.Constants.CoolDown.float() * float64(time.Second))
		if d < 0 || d > 24*time.Hour {
			return nil, fmt.Errorf("constants.runner_cool_down_period %ss is outside 0s to 24h, the range of spec.scaling.scaleDownDelay", cfg.Constants.CoolDown.text)
		}
		scaleDownDelay = &metav1.Duration{Duration: d}
	}
	names := map[string]bool{}
	var errs []error
	for i, g := range cfg.Groups {
		pool, notes, err := convertGroup(g, opts, scaleDownDelay)
		if err != nil {
			errs = append(errs, fmt.Errorf("groups[%d] %q: %w", i, g.Name, err))
			continue
		}
		key := pool.Namespace + "/" + pool.Name
		for n := 2; names[key]; n++ {
			pool.Name = fmt.Sprintf("%s-%d", poolName(g.Name, 48), n)
			key = pool.Namespace + "/" + pool.Name
		}
		names[key] = true
		for _, note := range notes {
			res.Notes = append(res.Notes, fmt.Sprintf("pool %s/%s: %s", pool.Namespace, pool.Name, note))
		}
		res.Pools = append(res.Pools, pool)
		if !slices.Contains(res.Namespaces, pool.Namespace) {
			res.Namespaces = append(res.Namespaces, pool.Namespace)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return res, nil
}

// unwrapConfigMap returns the runners_config.yaml held by a ConfigMap, or data itself.
func unwrapConfigMap(data []byte) ([]byte, error) {
	var head struct {
		Kind string            `json:"kind"`
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil || head.Kind != "ConfigMap" {
		return data, nil //nolint:nilerr // not a ConfigMap: the plain file, whose errors Convert reports
	}
	inner, ok := head.Data[configKey]
	if !ok {
		return nil, fmt.Errorf("the ConfigMap has no %s key", configKey)
	}
	return []byte(inner), nil
}

var uuidPattern = regexp.MustCompile(`^\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?$`)

// resolveUUID returns a UUID with braces for a UUID (with or without them) or a mapped name.
func resolveUUID(field, value string, uuids map[string]string) (v1alpha1.BitbucketUUID, error) {
	if mapped, ok := uuids[value]; ok {
		value = mapped
	}
	if !uuidPattern.MatchString(value) {
		return "", fmt.Errorf("%s %q is a name: a RunnerPool needs its UUID; pass --uuid %s='{...}' "+
			"(Bitbucket shows it in the settings' Runners page, and GET https://api.bitbucket.org/2.0/%s returns it)",
			field, value, value, apiPath(field, value))
	}
	return v1alpha1.BitbucketUUID("{" + strings.Trim(value, "{}") + "}"), nil
}

func apiPath(field, name string) string {
	if field == "repository" {
		return "repositories/{workspace}/" + name
	}
	return "workspaces/" + name
}

var labelPattern = regexp.MustCompile(`^[a-z0-9]+(\.[a-z0-9]+)*$`)

func convertGroup(g group, opts Options, scaleDownDelay *metav1.Duration) (*v1alpha1.RunnerPool, []string, error) {
	var notes []string
	if g.Strategy != strategyPercentageIdle {
		return nil, nil, fmt.Errorf("strategy %q is not %s, the one runners-autoscaler supports", g.Strategy, strategyPercentageIdle)
	}
	if g.Workspace == "" {
		return nil, nil, errors.New("workspace is missing")
	}
	namespace := g.Namespace
	if opts.Namespace != "" {
		namespace = opts.Namespace
	}
	if msgs := validation.IsDNS1123Label(namespace); len(msgs) > 0 {
		return nil, nil, fmt.Errorf("namespace %q: %s", namespace, strings.Join(msgs, "; "))
	}
	name := poolName(g.Name, 50)
	if name == "" {
		return nil, nil, errors.New("the name has no letters or digits to make a pool name of")
	}
	workspace, err := resolveUUID("workspace", g.Workspace, opts.UUIDs)
	if err != nil {
		return nil, nil, err
	}
	pool := &v1alpha1.RunnerPool{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "RunnerPool"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: v1alpha1.RunnerPoolSpec{
			Bitbucket: v1alpha1.BitbucketSpec{
				Workspace:            workspace,
				CredentialsSecretRef: v1alpha1.SecretReference{Name: opts.SecretName},
			},
		},
	}
	if g.Repository != "" {
		if pool.Spec.Bitbucket.Repository, err = resolveUUID("repository", g.Repository, opts.UUIDs); err != nil {
			return nil, nil, err
		}
	}
	for _, l := range g.Labels {
		switch {
		case l == v1alpha1.LabelSelfHosted || l == v1alpha1.LabelLinux || l == markerLabel:
			continue // added by Bitbucket or by the autoscaler itself
		case !labelPattern.MatchString(l) || len(l) > 50:
			return nil, nil, fmt.Errorf("label %q is not a Bitbucket runner label (lowercase letters and digits separated by dots, at most 50)", l)
		}
		if !slices.Contains(pool.Spec.Labels, v1alpha1.RunnerLabel(l)) {
			pool.Spec.Labels = append(pool.Spec.Labels, v1alpha1.RunnerLabel(l))
		}
	}
	if len(pool.Spec.Labels) > 10 {
		return nil, nil, fmt.Errorf("%d custom labels; Bitbucket allows 10", len(pool.Spec.Labels))
	}
	if err := convertParameters(g.Parameters, pool); err != nil {
		return nil, nil, err
	}
	if scaleDownDelay != nil {
		pool.Spec.Scaling.ScaleDownDelay = *scaleDownDelay
	}
	if g.Resources != nil {
		note, err := convertResources(*g.Resources, pool)
		if err != nil {
			return nil, nil, err
		}
		notes = append(notes, note)
	}
	return pool, notes, nil
}

func convertParameters(p parameters, pool *v1alpha1.RunnerPool) error {
	if p.Min == nil || p.Max == nil {
		return errors.New("parameters.min and parameters.max are required")
	}
	minRunners, maxRunners := p.Min.float(), p.Max.float()
	switch {
	case minRunners != float64(int32(minRunners)) || maxRunners != float64(int32(maxRunners)):
		return fmt.Errorf("parameters.min %s and max %s must be whole numbers", p.Min.text, p.Max.text)
	case minRunners < 0 || maxRunners < 1 || maxRunners > v1alpha1.MaxRunnersPerScope:
		return fmt.Errorf("parameters.min %s and max %s must be 0 or more and 1 to %d", p.Min.text, p.Max.text, v1alpha1.MaxRunnersPerScope)
	case minRunners > maxRunners:
		return fmt.Errorf("parameters.min %s is above max %s", p.Min.text, p.Max.text)
	}
	pool.Spec.MinRunners, pool.Spec.MaxRunners = int32(minRunners), int32(maxRunners)

	spec := &v1alpha1.PercentageIdleSpec{}
	for _, f := range []struct {
		name         string
		camel, snake *number
		into         *v1alpha1.Decimal
		ok           func(float64) bool
		want         string
	}{
		{"scaleUpThreshold", p.ScaleUpThreshold, p.ScaleUpThresholdSnake, &spec.ScaleUpThreshold, func(v float64) bool { return v >= 0 && v <= 1 }, "between 0 and 1"},
		{"scaleDownThreshold", p.ScaleDownThreshold, p.ScaleDownThresholdSnake, &spec.ScaleDownThreshold, func(v float64) bool { return v >= 0 && v <= 1 }, "between 0 and 1"},
		{"scaleUpMultiplier", p.ScaleUpMultiplier, p.ScaleUpMultiplierSnake, &spec.ScaleUpMultiplier, func(v float64) bool { return v > 1 }, "above 1"},
		{"scaleDownMultiplier", p.ScaleDownMultiplier, p.ScaleDownMultiplierSnake, &spec.ScaleDownMultiplier, func(v float64) bool { return v > 0 && v < 1 }, "between 0 and 1 (exclusive)"},
	} {
		v := f.camel
		if f.snake != nil {
			if v != nil && v.float() != f.snake.float() {
				return fmt.Errorf("parameters.%s %s and its snake_case spelling %s disagree", f.name, v.text, f.snake.text)
			}
			v = f.snake
		}
		if v == nil {
			return fmt.Errorf("parameters.%s is required by the %s strategy", f.name, strategyPercentageIdle)
		}
		if !f.ok(v.float()) {
			return fmt.Errorf("parameters.%s %s must be %s", f.name, v.text, f.want)
		}
		*f.into = v1alpha1.Decimal(strconv.FormatFloat(v.float(), 'f', -1, 64))
	}
	if p := spec; must(p.ScaleDownThreshold) >= must(p.ScaleUpThreshold) {
		return fmt.Errorf("parameters.scaleDownThreshold %s must be below scaleUpThreshold %s", p.ScaleDownThreshold, p.ScaleUpThreshold)
	}
	pool.Spec.Scaling.Policy = v1alpha1.ScalingPolicyPercentageIdle
	pool.Spec.Scaling.PercentageIdle = spec
	return nil
}

func must(d v1alpha1.Decimal) float64 {
	f, _ := strconv.ParseFloat(string(d), 64)
	return f
}

// convertResources maps the runner job's resources. In runners-autoscaler one job runs the
// runner and its docker daemon, and the memory is what the builds get; here builds get the
// memory of the step size, so the smallest step size that holds the job's memory is chosen, and
// the CPU goes to the docker sidecar, which runs the builds.
func convertResources(r resources, pool *v1alpha1.RunnerPool) (string, error) {
	memText := r.Limits["memory"]
	if memText == "" {
		memText = r.Requests["memory"]
	}
	var parts []string
	if memText != "" {
		mem, err := resource.ParseQuantity(memText)
		if err != nil {
			return "", fmt.Errorf("resources memory %q: %w", memText, err)
		}
		size := v1alpha1.StepSize("")
		for _, s := range []v1alpha1.StepSize{"1x", "2x", "4x", "8x"} {
			if step := v1alpha1.StepMemory[s]; mem.Cmp(step) <= 0 {
				size = s
				break
			}
		}
		if size == "" {
			return "", fmt.Errorf("resources memory %s is above the 32Gi of the largest step size, 8x", memText)
		}
		pool.Spec.Runner.StepSize = size
		step := v1alpha1.StepMemory[size]
		parts = append(parts, fmt.Sprintf("job memory %s -> stepSize %s (%s for the builds)", memText, size, step.String()))
	}
	cpu := corev1.ResourceRequirements{}
	for _, side := range []struct {
		from map[string]string
		into *corev1.ResourceList
	}{{r.Requests, &cpu.Requests}, {r.Limits, &cpu.Limits}} {
		if text := side.from["cpu"]; text != "" {
			q, err := resource.ParseQuantity(text)
			if err != nil {
				return "", fmt.Errorf("resources cpu %q: %w", text, err)
			}
			*side.into = corev1.ResourceList{corev1.ResourceCPU: q}
		}
	}
	if cpu.Requests != nil || cpu.Limits != nil {
		pool.Spec.Docker.Resources = &cpu
		parts = append(parts, "job CPU -> spec.docker.resources (the builds run in the docker sidecar)")
	}
	return strings.Join(parts, "; "), nil
}

var notNameChars = regexp.MustCompile(`[^a-z0-9]+`)

// poolName makes a DNS label of at most n characters from a group name.
func poolName(group string, n int) string {
	name := strings.Trim(notNameChars.ReplaceAllString(strings.ToLower(group), "-"), "-")
	if len(name) > n {
		name = strings.TrimRight(name[:n], "-")
	}
	return name
}

// SecretCommands are the commands that create the credentials Secret in each namespace, with
// placeholders for the values runners-autoscaler read from its own Secret
// (BITBUCKET_OAUTH_CLIENT_ID and BITBUCKET_OAUTH_CLIENT_SECRET, or BITBUCKET_USERNAME and
// BITBUCKET_APP_PASSWORD).
func SecretCommands(res *Result, secretName string) string {
	if secretName == "" {
		secretName = "bitbucket-credentials"
	}
	var b bytes.Buffer
	for _, ns := range res.Namespaces {
		fmt.Fprintf(&b, "kubectl -n %s create secret generic %s \\\n  --from-literal=%s=\"$BITBUCKET_OAUTH_CLIENT_ID\" --from-literal=%s=\"$BITBUCKET_OAUTH_CLIENT_SECRET\"\n",
			ns, secretName, v1alpha1.SecretKeyClientID, v1alpha1.SecretKeyClientSecret)
	}
	fmt.Fprintf(&b, "# or, for an app password (BITBUCKET_USERNAME, BITBUCKET_APP_PASSWORD): --from-literal=%s=... --from-literal=%s=...\n",
		v1alpha1.SecretKeyUsername, v1alpha1.SecretKeyPassword)
	return b.String()
}

// YAML renders the pools as one multi-document stream, in order.
func YAML(pools []*v1alpha1.RunnerPool) ([]byte, error) {
	var b bytes.Buffer
	for i, p := range pools {
		out, err := PoolYAML(p)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(out)
	}
	return b.Bytes(), nil
}

// PoolYAML renders one pool without the empty status and creation timestamp a marshalled
// object carries.
func PoolYAML(p *v1alpha1.RunnerPool) ([]byte, error) {
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("marshal pool %s: %w", p.Name, err)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	delete(obj, "status")
	if spec, ok := obj["spec"].(map[string]any); ok {
		if scaling, ok := spec["scaling"].(map[string]any); ok && scaling["policy"] == string(v1alpha1.ScalingPolicyPercentageIdle) {
			delete(scaling, "idleRunners") // not used by PercentageIdle
		}
	}
	if meta, ok := obj["metadata"].(map[string]any); ok {
		delete(meta, "creationTimestamp")
	}
	return yaml.Marshal(obj)
}
