//go:build !linux

package quictransport

import "net"

// withGRO returns pc: UDP GRO is Linux's.
func withGRO(pc net.PacketConn) net.PacketConn { return pc }

// udpConn returns pc.
func udpConn(pc net.PacketConn) net.PacketConn { return pc }
