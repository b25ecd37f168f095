//go:build !linux

package lab_test

import "testing"

func TestLab(t *testing.T) {
	t.Skip("LAB SKIPPED: needs Linux network namespaces, root and miniupnpd-nftables (run make lab-deps)")
}
