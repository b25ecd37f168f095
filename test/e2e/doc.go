// Package e2e runs the real porthole-relay and porthole-agent binaries on loopback:
// real bytes end to end, bad input, and failure injection (SIGKILL, restart,
// reconnect storms). The framework (framework_test.go) builds both binaries once per
// test process, hands out free ports on 127.0.0.1, writes configs into t.TempDir(),
// starts and stops processes by pid, and prints their logs when a test fails.
package e2e
