package operator

import (
	"crypto/tls"

	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/runnerpool/runnerpool-operator/internal/metricsauth"
)

// The secure metrics endpoint asks the API server who a caller is and whether it may GET
// /metrics. controller-gen writes these rules into config/rbac/metrics_auth, a ClusterRole of
// their own: both resources are cluster-scoped, so the namespaced Roles of an install that
// watches a list of namespaces could not grant them.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// metricsServerOptions serves metrics over plain HTTP, or, with MetricsSecure, over HTTPS to
// callers with a bearer token the API server accepts and a grant of GET on the /metrics
// non-resource URL (the metrics-reader ClusterRole).
func metricsServerOptions(o Options) metricsserver.Options {
	opts := metricsserver.Options{BindAddress: o.MetricsAddr}
	if !o.MetricsSecure {
		return opts
	}
	opts.SecureServing = true
	opts.FilterProvider = metricsauth.FilterProvider
	opts.CertDir = o.MetricsCertDir
	// HTTP/2 stays off: its rapid reset and stream cancellation weaknesses
	// (CVE-2023-44487, CVE-2023-39325) buy nothing for one scrape at a time.
	opts.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
	return opts
}
