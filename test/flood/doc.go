// Package flood runs the floods of issue #7 against a real porthole-relay and
// watches a viewer who should be served all along: a probe flood from an
// authenticated agent, thousands of idle viewer connections from one address,
// and unauthenticated QUIC handshakes and TCP connects on the agents' port.
// [StartRig] starts the relay and two agents (test/framework) that the e2e
// tests (test/e2e flood_test.go) and the bench's "floods" step share. The
// floods are generators only: what counts as served is the caller's to judge.
package flood
