// Package bitbucket is the operator's only way to talk to Bitbucket Cloud: the
// undocumented runner API under /internal/.../pipelines-config/runners, and the
// read-only parts of the public 2.0 API the queue signal needs (pipelines,
// steps, files, repositories).
//
// Every request goes through one path that authenticates (OAuth client
// credentials with a shared, cached token; an access token; or basic auth),
// draws from an hourly budget shared by every client of the same credential,
// retries what is safe to retry, and turns failures into typed errors that
// never carry a secret. See docs/adr/0003-bitbucket-client.md.
package bitbucket
