//go:build !linux

package quictransport

const gsoSupported = false

func gsoOOB(int) []byte { return nil }
