//go:build tools

// Package frp pins frp (github.com/fatedier/frp), the yardstick issue #7
// measures Porthole against: `make bench` builds frps and frpc from this
// module (a module of its own, so that frp's dependencies stay out of
// Porthole's go.mod) and measures them beside Porthole in the same run.
package frp

import (
	_ "github.com/fatedier/frp/cmd/frpc"
	_ "github.com/fatedier/frp/cmd/frps"
)
