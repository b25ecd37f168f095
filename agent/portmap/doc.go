// Package portmap asks the home router to forward public ports to the agent,
// using PCP (RFC 6887), NAT-PMP (RFC 6886) or UPnP IGD (v1 and v2), and keeps
// those mappings alive: leases are renewed at half their lifetime, the router
// is checked cheaply every CheckInterval (30 s) so a reboot or a lost mapping
// is noticed and the mappings are made again within a minute, and every
// mapping is deleted on clean shutdown. Mappings left behind by an earlier run are removed at start, using
// the state file.
//
// # Choice of protocol
//
// All enabled protocols are probed in parallel, each with a short timeout
// (NAT-PMP external-address request, PCP ANNOUNCE, SSDP M-SEARCH to the
// multicast group and unicast to the gateway). One protocol is then used for
// all mappings, preferring PCP, then NAT-PMP, then UPnP: the first two are
// one small UDP exchange per request and carry an epoch in every reply,
// while UPnP needs SOAP over HTTP. PCP goes first because the per-mapping nonce
// stops other hosts from deleting our mappings and because it reports the
// external address with each mapping. A protocol that answered but refused is
// used only when none works outright, so the reported problem comes from the
// router that actually answered.
//
// # One public port
//
// Porthole promises one public port per service, the same on the relay and
// the router. A router that grants a different external port (NAT-PMP, PCP,
// or UPnP AddAnyPortMapping) breaks that promise, so such a mapping is
// released at once and reported (see PortMismatchError); it is retried
// politely later.
//
// # Noticing a router that lost our mappings
//
// Each check asks the router something cheap. UPnP: the external address and
// GetSpecificPortMappingEntry per mapping (a reboot also moves the control
// URL, which sends the client back to discovery). NAT-PMP and PCP have no
// way to ask whether a mapping exists, so each check requests every mapping
// again, with the same nonce and port: a router that lost it makes it again,
// whatever the cause (a reboot, a firewall reload that flushed its rules).
// Every NAT-PMP and PCP reply carries the router's epoch; one going back or
// jumping (RFC 6886 3.6, RFC 6887 8.5) counts as a restart and every mapping
// is made again at once. A reboot soon after the previous reply stays within
// the RFC's tolerance and is caught by the re-request instead. A router
// that answers for a rule that no longer forwards (miniupnpd's UPnP after a
// firewall reload) is caught only from outside: the agent calls Repair when
// the relay's probe fails, and every mapping is deleted and made again.
package portmap
