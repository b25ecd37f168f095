// Package framework is the one harness of Porthole's process-level tests: the
// e2e tests (test/e2e), the namespace lab (test/lab) and the benchmarks
// (test/bench) all use it to build the binaries once per test process, pick
// ports, start and stop programs by pid with their output captured (and shown
// when a test fails), wait for readiness by polling a condition with a
// deadline, write relay and agent YAML, and run mock LAN services (echo,
// greeter, a simulated camera).
//
// Functions that take a testing.TB end the test on error; their error-returning
// counterparts serve programs that are not tests (test/bench/cmd/benchreport).
// Nothing here sleeps to wait for a condition.
package framework
