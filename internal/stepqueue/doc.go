// Package stepqueue tells how many pipeline steps wait for a self-hosted runner,
// and which runner labels they need, for the Queue scaling policy and the
// step-wait metric.
//
// Bitbucket has no API field for a waiting step's labels and no webhook for a
// queued step, so the signal is read: the running pipelines of a repository,
// the steps of each that no runner has picked up yet, and the runs-on labels
// of those steps from bitbucket-pipelines.yml at the pipeline's commit.
//
// A step is placed in the file by the pipeline's selector (the section it ran
// from; the ref matched against the file's glob patterns when there is no
// selector), then by its name when that name is unique, else by its position.
// A step that cannot be placed is reported with a Reason and no labels: it is
// better to scale for one step too few than to start runners nobody uses.
//
// Store makes reading cheap: one refresh per repository per poll interval,
// shared by every caller, each commit's file read once, the steps of a
// PENDING pipeline taken from its file, and the steps of a running pipeline
// read only when its listing shows a change the rules cannot follow or it
// holds a waiting step some pool wants (stepsPlan). Assign then hands
// each step to exactly one pool, so pools whose labels overlap do not both
// scale up for it.
//
// Reader is what the RunnerPool reconciler calls: the steps waiting for one pool, read through
// the shared Store.
package stepqueue
