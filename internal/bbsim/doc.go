// Package bbsim simulates the parts of Bitbucket Cloud that the runner
// operator talks to, over real HTTP, so that the production client, the
// end-to-end tests, the benchmarks and the local demo all run against the same
// thing (docs/adr/0002-bbsim.md).
//
// Bitbucket paths, served by one handler whatever the Host:
//
//	POST /site/oauth2/access_token                            client credentials (and refresh_token) grant
//	GET|POST /internal/workspaces/{ws}/pipelines-config/runners
//	GET|DELETE /internal/workspaces/{ws}/pipelines-config/runners/{runner}
//	PUT /internal/workspaces/{ws}/pipelines-config/runners/{runner}/state
//	... the same under /internal/repositories/{ws}/{repo}/pipelines-config/runners
//	GET /2.0/workspaces/{ws}, /2.0/repositories/{ws}, /2.0/repositories/{ws}/{repo}
//	GET /2.0/repositories/{ws}/{repo}/pipelines[/{pipeline}[/steps[/{step}]]]
//	GET /2.0/repositories/{ws}/{repo}/src/{commit}/bitbucket-pipelines.yml
//
// The admin API under /_sim/ needs no credentials and sees neither faults
// nor rate limits; every call has a Go method twin on Server:
//
//	GET  /_sim/healthz
//	GET  /_sim/state                         State()
//	POST /_sim/enqueue                       Enqueue()        {"count","runs_on","duration_seconds","workspace","repository","steps_per_pipeline","script","image","files"}
//	GET  /_sim/steps/{uuid}                  Step()           one step, with the exit code and log its agent reported
//	POST /_sim/runners                       CreateRunner()   {"workspace","repository","name","labels"}
//	PATCH /_sim/runners/{uuid}               UpdateRunner()   {"name","labels"} (rename/relabel as in the UI)
//	POST /_sim/runners/{uuid}/connect        ConnectRunner()
//	POST /_sim/runners/{uuid}/disconnect     DisconnectRunner()
//	GET|PUT /_sim/faults                     SetFaults()      {"error_rate","error_codes","latency":"250ms","drop_rate","force_429","seed"}
//	PUT  /_sim/config                        SetNoMatch(), SetHourlyLimit()  {"no_match","hourly_limit"}
//	POST /_sim/webhooks                      AddWebhook()     {"url","secret"}
//	POST /_sim/reset                         Reset()
//	POST /_sim/tick                          Tick()
//
// Runner agents that really run (the real-node tests' runner stand-in) use
// bbsim's own agent API, /oauth/token and /_agent/v1/ (agentapi.go).
//
// The simulator keeps its own wire types on purpose: it never imports the
// operator's Bitbucket client, so a misunderstanding of the wire format in one
// does not silently cancel out in the other.
package bbsim
