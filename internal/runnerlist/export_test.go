package runnerlist

// Fingerprint is fingerprint, for the tests of package runnerlist_test.
var Fingerprint = fingerprint
