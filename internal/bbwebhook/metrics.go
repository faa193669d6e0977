package bbwebhook

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Delivery outcomes, the values of the "outcome" label.
const (
	OutcomeAccepted     = "accepted"
	OutcomeIgnored      = "ignored"
	OutcomeBadSignature = "bad_signature"
	OutcomeMalformed    = "malformed"
	OutcomeTooLarge     = "too_large"
	OutcomeBusy         = "busy" // MaxInFlight deliveries were being read already
)

// eventOther stands for any event key the receiver does not act on. The
// header is chosen by the sender, before any signature check, so using it
// as a label value as-is would let anyone create series without bound.
const eventOther = "other"

// Metrics counts webhook deliveries. Create it with NewMetrics and register
// it with Register; a nil *Metrics is valid and records nothing.
type Metrics struct {
	deliveries *prometheus.CounterVec
}

// NewMetrics creates unregistered collectors.
func NewMetrics() *Metrics {
	return &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "runnerpool", Subsystem: "webhook", Name: "deliveries_total",
			Help: "Bitbucket webhook deliveries received, by event key (other for keys not acted on) and outcome (accepted, ignored, bad_signature, malformed, too_large).",
		}, []string{"event", "outcome"}),
	}
}

// Register adds the collectors to reg. If reg already holds them (a second
// Metrics registered with the same registry), m switches to the registered
// ones so every Metrics on that registry records into the same series.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	if err := reg.Register(m.deliveries); err != nil {
		var already prometheus.AlreadyRegisteredError
		if errors.As(err, &already) {
			if existing, ok := already.ExistingCollector.(*prometheus.CounterVec); ok {
				m.deliveries = existing
				return nil
			}
		}
		return fmt.Errorf("register webhook metrics: %w", err)
	}
	return nil
}

func (m *Metrics) delivery(key, outcome string) {
	if m == nil {
		return
	}
	m.deliveries.WithLabelValues(eventLabel(key), outcome).Inc()
}

func eventLabel(key string) string {
	if Handled(key) {
		return key
	}
	return eventOther
}
