package bbwebhook

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
)

// The simulator's deliveries are what the end-to-end tests send; the
// receiver must take them exactly as they come, signed.
func TestAcceptsBbsimDeliveries(t *testing.T) {
	got := make(chan Event, 16)
	h := &Handler{
		Secret:  []byte(testSecret),
		Metrics: NewMetrics(),
		OnEvent: func(_ context.Context, ev Event) {
			select {
			case got <- ev:
			default:
			}
		},
	}
	receiver := httptest.NewServer(h)
	t.Cleanup(receiver.Close)

	sim := bbsim.New(bbsim.Options{Webhooks: []bbsim.WebhookTarget{{URL: receiver.URL, Secret: testSecret}}})
	t.Cleanup(sim.Close)
	if _, err := sim.Enqueue(bbsim.EnqueueRequest{Count: 1, Duration: time.Minute}); err != nil {
		t.Fatalf("enqueue: %v", err)
	}

	// The timeout only guards against a hang; delivery is normally immediate.
	var ev Event
	select {
	case ev = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook event reached OnEvent")
	}
	want := Event{
		Key:                EventCommitStatusCreated,
		RequestUUID:        ev.RequestUUID,
		WorkspaceUUID:      bbsim.DefaultWorkspaceUUID,
		WorkspaceSlug:      bbsim.DefaultWorkspaceSlug,
		RepositoryUUID:     bbsim.DefaultRepositoryUUID,
		RepositoryFullName: bbsim.DefaultWorkspaceSlug + "/" + bbsim.DefaultRepositorySlug,
		CommitStatusState:  StateInProgress,
	}
	if ev != want {
		t.Errorf("event %+v, want %+v", ev, want)
	}
	if ev.RequestUUID == "" {
		t.Error("RequestUUID empty: X-Request-UUID not read")
	}
}
