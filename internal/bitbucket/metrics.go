package bitbucket

import (
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds this package's collectors. A Metrics value is created per
// registry rather than as package globals: tests build a fresh registry per
// case, and a global set registered twice would panic (MustRegister) or
// silently split counts. RegisterMetrics on a registry that already holds the
// collectors returns the ones already there, so calling it twice is harmless.
// A nil *Metrics is valid and records nothing.
type Metrics struct {
	requests       *prometheus.CounterVec
	latency        *prometheus.HistogramVec
	retries        *prometheus.CounterVec
	rateLimitWaits *prometheus.CounterVec
	rateLimitSecs  *prometheus.CounterVec
	budgetRefusals *prometheus.CounterVec
	budgets        *budgetCollector
}

const (
	metricsNamespace = "runnerpool"
	metricsSubsystem = "bitbucket"
	codeNetworkError = "network_error"
)

// NewMetrics creates unregistered collectors.
func NewMetrics() *Metrics {
	return &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "requests_total",
			Help: "HTTP requests sent to Bitbucket, by endpoint template, method and status code (network_error when no response).",
		}, []string{"endpoint", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "request_duration_seconds",
			Help:    "Latency of single HTTP attempts to Bitbucket.",
			Buckets: []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, []string{"endpoint", "method"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "retries_total",
			Help: "Requests sent again, by endpoint template and reason (server_error, network_error, rate_limited, token_refresh, token_error).",
		}, []string{"endpoint", "reason"}),
		rateLimitWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "rate_limit_waits_total",
			Help: "Times a request waited after a 429 before trying again.",
		}, []string{"endpoint"}),
		rateLimitSecs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "rate_limit_wait_seconds_total",
			Help: "Seconds spent waiting after 429 answers.",
		}, []string{"endpoint"}),
		budgetRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "budget_refusals_total",
			Help: "Requests not sent because the credential's hourly budget had no slot for their priority.",
		}, []string{"endpoint", "priority"}),
		budgets: &budgetCollector{
			desc: prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "budget_remaining"),
				"Requests left in the rolling hour for a credential, labelled by a prefix of the credential's hash.",
				[]string{"credential"}, nil),
			throttled: prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "throttled"),
				"1 while Bitbucket answers a credential with 429 in a row (each one doubles its backoff), else 0; labelled by a prefix of the credential's hash.",
				[]string{"credential"}, nil),
			backoff: prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "throttle_backoff_seconds"),
				"Seconds until a throttled credential may send its next request, 0 when it may send now.",
				[]string{"credential"}, nil),
			consecutive: prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "consecutive_429"),
				"429 answers in a row for a credential; 0 once Bitbucket answers it otherwise.",
				[]string{"credential"}, nil),
			budgets: map[string]*Budget{},
		},
	}
}

// RegisterMetrics creates the collectors and registers them with reg. If reg
// already has them (a second call with the same registry), the registered
// ones are returned so both callers record into the same series.
func RegisterMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := NewMetrics()
	var err error
	m.requests, err = registerOrReuse(reg, m.requests)
	if err != nil {
		return nil, err
	}
	if m.latency, err = registerOrReuse(reg, m.latency); err != nil {
		return nil, err
	}
	if m.retries, err = registerOrReuse(reg, m.retries); err != nil {
		return nil, err
	}
	if m.rateLimitWaits, err = registerOrReuse(reg, m.rateLimitWaits); err != nil {
		return nil, err
	}
	if m.rateLimitSecs, err = registerOrReuse(reg, m.rateLimitSecs); err != nil {
		return nil, err
	}
	if m.budgetRefusals, err = registerOrReuse(reg, m.budgetRefusals); err != nil {
		return nil, err
	}
	if m.budgets, err = registerOrReuse(reg, m.budgets); err != nil {
		return nil, err
	}
	return m, nil
}

func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var already prometheus.AlreadyRegisteredError
		if errors.As(err, &already) {
			if existing, ok := already.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

func statusCode(code int) string { return strconv.Itoa(code) }

func (m *Metrics) observe(endpoint, method, code string, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(endpoint, method, code).Inc()
	m.latency.WithLabelValues(endpoint, method).Observe(d.Seconds())
}

func (m *Metrics) retry(endpoint, reason string) {
	if m == nil {
		return
	}
	m.retries.WithLabelValues(endpoint, reason).Inc()
}

func (m *Metrics) rateLimitWait(endpoint string, d time.Duration) {
	if m == nil {
		return
	}
	m.rateLimitWaits.WithLabelValues(endpoint).Inc()
	m.rateLimitSecs.WithLabelValues(endpoint).Add(d.Seconds())
}

func (m *Metrics) budgetRefused(endpoint string, p Priority) {
	if m == nil {
		return
	}
	m.budgetRefusals.WithLabelValues(endpoint, p.String()).Inc()
}

func (m *Metrics) trackBudget(credentialKey string, b *Budget) {
	if m == nil {
		return
	}
	m.budgets.add(credentialLabel(credentialKey), b)
}

// credentialLabel is a short prefix of the credential hash: enough to tell
// credentials apart on a dashboard, far too short to be worth anything else.
func credentialLabel(key string) string {
	if len(key) > 8 {
		return key[:8]
	}
	return key
}

// budgetCollector reads Remaining at scrape time: the window rolls even when
// no request is sent, so a gauge set on each request would go stale.
type budgetCollector struct {
	desc, throttled, backoff, consecutive *prometheus.Desc

	mu      sync.Mutex
	budgets map[string]*Budget
}

func (c *budgetCollector) add(label string, b *Budget) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.budgets[label] = b
}

func (c *budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.throttled
	ch <- c.backoff
	ch <- c.consecutive
}

func (c *budgetCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for label, b := range c.budgets {
		t := b.Throttle()
		ch <- prometheus.MustNewConstMetric(c.throttled, prometheus.GaugeValue, float64(boolInt(t.Strikes > 0)), label)
		ch <- prometheus.MustNewConstMetric(c.backoff, prometheus.GaugeValue, t.Wait.Seconds(), label)
		ch <- prometheus.MustNewConstMetric(c.consecutive, prometheus.GaugeValue, float64(t.Strikes), label)
		if b.Limit() <= 0 {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(b.Remaining()), label)
	}
}
