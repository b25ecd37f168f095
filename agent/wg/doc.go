// Package wg makes the agent a userspace WireGuard endpoint for phones: a
// wireguard-go device whose packets go through a conn.Bind with two legs, a
// UDP socket on the WireGuard port (the direct path, which the router maps to
// the agent) and the relay's tunnel datagrams (the relay path: the relay
// forwards what it cannot read, naming each phone's UDP flow by a number).
// Replies go back the way the peer's last authenticated packet came: that is
// wireguard-go's own endpoint roaming, and a Bind endpoint is either a UDP
// address or a relay flow.
//
// Inside the tunnel a userspace TCP/IP stack (gVisor's netstack, as a
// tun.Device of its own, Netstack: wireguard-go's tun/netstack handed packets
// over one at a time and held gVisor's sender meanwhile) holds the agent's
// tunnel address; every
// service answers there on its public port, in plain (WireGuard already
// encrypts), handed to the service's own gateway pipeline with the viewer
// known from the peer's key (tunnel source address -> peer -> viewer). With
// LAN addresses on, each camera target's LAN address and port answers inside
// the tunnel too, and nothing else of the LAN: the stack owns those addresses
// itself, it forwards nothing, and peers cannot reach each other.
//
// Every UDP packet at the direct leg first goes through the relay's probe
// check (the relay verifies the router's UDP mapping by sending a probe that
// must come back); packets that cannot be WireGuard messages are counted and
// dropped before wireguard-go sees them. Handshake floods are wireguard-go's
// business: under load it answers initiations with cookie replies and rate
// limits by source (relay flows count as sources of their own).
package wg
