// Package publicip finds the home's public IPv4 and IPv6 addresses without
// trusting any single echo service: several independent sources (the relay's
// view of the tunnel, HTTPS echo services, DNS whoami, the router) are asked in
// parallel, every answer is checked to be a global unicast address, and an
// address is reported only when enough sources agree on it.
//
// It also classifies the NAT in front of the home (CGNAT, double NAT), picks a
// stable IPv6 address over a temporary one, and watches local addresses so the
// agent can re-check at once when they change.
package publicip
