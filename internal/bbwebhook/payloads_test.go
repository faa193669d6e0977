package bbwebhook

// Payloads shaped like Bitbucket Cloud's (event-payloads doc: actor,
// repository, commit_status / push), trimmed to what matters plus a few
// fields the parser must skip.
const (
	commitStatusPayload = `{
  "actor": {"type": "user", "uuid": "{0d6c2f4a-3b1e-4c5d-8e7f-9a0b1c2d3e4f}", "display_name": "Dev"},
  "repository": {
    "type": "repository", "uuid": "{c3e9a7d2-1f6b-4a8e-b5d0-2e7f9c4a6b31}", "full_name": "acme/app", "name": "app",
    "is_private": true, "scm": "git",
    "workspace": {"type": "workspace", "uuid": "{5b2f6c1e-8d4a-4e3b-9f21-7a6c0d9e4b10}", "slug": "acme", "name": "Acme"},
    "project": {"type": "project", "key": "APP", "uuid": "{11111111-2222-3333-4444-555555555555}"},
    "links": {"html": {"href": "https://bitbucket.org/acme/app"}}
  },
  "commit_status": {
    "type": "build", "key": "pipeline-key", "name": "Pipeline #7 for main", "state": "INPROGRESS",
    "refname": "main", "url": "https://bitbucket.org/acme/app/addon/pipelines/home#!/results/7",
    "commit": {"type": "commit", "hash": "0123456789abcdef0123456789abcdef01234567"},
    "created_on": "2026-01-02T03:04:05.000000+00:00", "updated_on": "2026-01-02T03:04:05.000000+00:00",
    "links": {"self": {"href": "x"}, "commit": {"href": "y"}}
  }
}`
	pushPayload = `{
  "actor": {"type": "user", "uuid": "{0d6c2f4a-3b1e-4c5d-8e7f-9a0b1c2d3e4f}"},
  "repository": {"type": "repository", "uuid": "c3e9a7d2-1f6b-4a8e-b5d0-2e7f9c4a6b31", "full_name": "acme/app"},
  "push": {"changes": [{"new": {"type": "branch", "name": "main"}, "old": null, "created": true, "commits": []}]}
}`
)

const (
	acmeRepoUUID      = "{c3e9a7d2-1f6b-4a8e-b5d0-2e7f9c4a6b31}"
	acmeWorkspaceUUID = "{5b2f6c1e-8d4a-4e3b-9f21-7a6c0d9e4b10}"
)
