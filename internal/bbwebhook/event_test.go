package bbwebhook

import (
	"errors"
	"testing"
)

func TestParseEvent(t *testing.T) {
	tests := []struct {
		name    string
		key     string
		body    string
		want    Event
		wantErr error // nil: success; errAny: any error
	}{
		{
			name: "commit status created carries repository, workspace and state",
			key:  EventCommitStatusCreated, body: commitStatusPayload,
			want: Event{
				Key: EventCommitStatusCreated, WorkspaceUUID: acmeWorkspaceUUID, WorkspaceSlug: "acme",
				RepositoryUUID: acmeRepoUUID, RepositoryFullName: "acme/app", CommitStatusState: StateInProgress,
			},
		},
		{
			name: "push without workspace object takes the slug from the full name and braces a bare uuid",
			key:  EventPush, body: pushPayload,
			want: Event{Key: EventPush, WorkspaceSlug: "acme", RepositoryUUID: acmeRepoUUID, RepositoryFullName: "acme/app"},
		},
		{
			name: "state is upper-cased",
			key:  EventCommitStatusUpdated,
			body: `{"repository":{"uuid":"{r}","full_name":"w/r"},"commit_status":{"state":"successful"}}`,
			want: Event{Key: EventCommitStatusUpdated, WorkspaceSlug: "w", RepositoryUUID: "{r}", RepositoryFullName: "w/r", CommitStatusState: StateSuccessful},
		},
		{
			name: "commit status state is not read for other events",
			key:  EventPush,
			body: `{"repository":{"uuid":"{r}"},"commit_status":{"state":"FAILED"}}`,
			want: Event{Key: EventPush, RepositoryUUID: "{r}"},
		},
		{
			name: "commit status event without commit_status still names the repository",
			key:  EventCommitStatusCreated,
			body: `{"repository":{"full_name":"w/r"}}`,
			want: Event{Key: EventCommitStatusCreated, WorkspaceSlug: "w", RepositoryFullName: "w/r"},
		},
		{name: "missing repository", key: EventPush, body: `{"actor":{}}`, wantErr: ErrMissingRepository},
		{name: "null repository", key: EventPush, body: `{"repository":null}`, wantErr: ErrMissingRepository},
		{name: "repository without uuid or name", key: EventPush, body: `{"repository":{"type":"repository"}}`, wantErr: ErrMissingRepository},
		{name: "JSON null", key: EventPush, body: `null`, wantErr: ErrMissingRepository},
		{name: "not JSON", key: EventPush, body: `not json`, wantErr: errAny},
		{name: "truncated", key: EventPush, body: commitStatusPayload[:40], wantErr: errAny},
		{name: "array", key: EventPush, body: `[]`, wantErr: errAny},
		{name: "wrong type for repository", key: EventPush, body: `{"repository":"acme/app"}`, wantErr: errAny},
		{name: "trailing garbage", key: EventPush, body: `{"repository":{"uuid":"{r}"}} x`, wantErr: errAny},
		{name: "empty body", key: EventPush, body: ``, wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEvent(tt.key, []byte(tt.body))
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("ParseEvent: unexpected error %v", err)
			case tt.wantErr == nil:
				if got != tt.want {
					t.Errorf("ParseEvent = %+v, want %+v", got, tt.want)
				}
			case err == nil:
				t.Fatalf("ParseEvent = %+v, want an error", got)
			case tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Errorf("ParseEvent error %v, want %v", err, tt.wantErr)
			}
		})
	}
}

var errAny = errors.New("any error")
