//go:build race

package relay_test

// Under the race detector goroutine stacks are larger: measured 40 KiB per
// idle agent (62 KiB of heap).
const (
	maxKiBPerAgent        = 130
	maxGoroutinesPerAgent = 4
)
