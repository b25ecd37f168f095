//go:build !race

package tunnel

const floodConns = 1000
