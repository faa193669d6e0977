// Package bbwebhook receives Bitbucket Cloud webhook deliveries so a pool can
// poll Bitbucket as soon as a pipeline starts instead of at its next tick.
//
// Bitbucket has no "step queued" event; a commit status turning INPROGRESS is
// the closest signal (shared/reference/bitbucket-api.md, section 5). An event
// is therefore only a hint to look now: the poll stays the source of truth,
// and a lost, late or forged-but-rejected delivery never changes a decision.
//
// Receiver serves the deliveries (Handler checks and decodes them) on every replica, and
// PoolWaker asks the pools an event concerns for a poll.
package bbwebhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Event keys the receiver acts on (openapi webhook_subscription.events).
const (
	EventCommitStatusCreated = "repo:commit_status_created"
	EventCommitStatusUpdated = "repo:commit_status_updated"
	EventPush                = "repo:push"
)

// Commit status states (openapi commitstatus.state).
const (
	StateInProgress = "INPROGRESS"
	StateSuccessful = "SUCCESSFUL"
	StateFailed     = "FAILED"
	StateStopped    = "STOPPED"
)

// Handled reports whether deliveries with this X-Event-Key are acted on.
func Handled(key string) bool {
	switch key {
	case EventCommitStatusCreated, EventCommitStatusUpdated, EventPush:
		return true
	}
	return false
}

// Event is what the operator needs from a delivery.
type Event struct {
	// Key is the X-Event-Key header, e.g. "repo:commit_status_created".
	Key string
	// RequestUUID is the X-Request-UUID header; it stays the same across
	// Bitbucket's retries of one delivery, so it can drop duplicates.
	RequestUUID string
	// WorkspaceUUID and RepositoryUUID are in Bitbucket's braced form
	// ("{...}"), as the Bitbucket client uses them.
	WorkspaceUUID, WorkspaceSlug       string
	RepositoryUUID, RepositoryFullName string
	// CommitStatusState is INPROGRESS, SUCCESSFUL, FAILED or STOPPED for
	// commit status events, empty otherwise.
	CommitStatusState string
}

// ErrMissingRepository is returned for a payload without a usable repository:
// without one there is nothing to poll.
var ErrMissingRepository = errors.New("payload has no repository")

// payload holds only the fields the operator reads; encoding/json skips the
// rest, so new fields Bitbucket adds never break decoding.
type payload struct {
	Repository *struct {
		UUID      string `json:"uuid"`
		FullName  string `json:"full_name"`
		Workspace *struct {
			UUID string `json:"uuid"`
			Slug string `json:"slug"`
		} `json:"workspace"`
	} `json:"repository"`
	CommitStatus *struct {
		State string `json:"state"`
	} `json:"commit_status"`
}

// ParseEvent decodes a delivery body for the given event key. It reads the
// repository (and workspace) every repository event carries, plus the commit
// status state for commit status events. Unknown fields are ignored; a body
// that is not a JSON object or has no repository is an error.
func ParseEvent(key string, body []byte) (Event, error) {
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return Event{}, fmt.Errorf("decode %s payload: %w", key, err)
	}
	repo := p.Repository
	if repo == nil {
		return Event{}, fmt.Errorf("decode %s payload: %w", key, ErrMissingRepository)
	}
	ev := Event{
		Key:                key,
		RepositoryUUID:     bracedUUID(repo.UUID),
		RepositoryFullName: strings.TrimSpace(repo.FullName),
	}
	if ev.RepositoryUUID == "" && ev.RepositoryFullName == "" {
		return Event{}, fmt.Errorf("decode %s payload: %w (neither uuid nor full_name)", key, ErrMissingRepository)
	}
	if ws := repo.Workspace; ws != nil {
		ev.WorkspaceUUID = bracedUUID(ws.UUID)
		ev.WorkspaceSlug = strings.TrimSpace(ws.Slug)
	}
	// Older payloads and some event types omit the workspace object, but the
	// full name is always "<workspace slug>/<repository slug>".
	if ev.WorkspaceSlug == "" {
		if slug, _, ok := strings.Cut(ev.RepositoryFullName, "/"); ok {
			ev.WorkspaceSlug = slug
		}
	}
	if p.CommitStatus != nil && (key == EventCommitStatusCreated || key == EventCommitStatusUpdated) {
		ev.CommitStatusState = strings.ToUpper(strings.TrimSpace(p.CommitStatus.State))
	}
	return ev, nil
}

var bareUUID = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// bracedUUID returns Bitbucket's "{uuid}" form, so events compare equal to
// the UUIDs the API returns whether or not a payload carried the braces.
func bracedUUID(s string) string {
	s = strings.TrimSpace(s)
	if bareUUID.MatchString(s) {
		return "{" + s + "}"
	}
	return s
}
