// Package portmap asks the home router to forward public ports to the agent,
// using PCP (RFC 6887), NAT-PMP (RFC 6886) or UPnP IGD (v1 and v2), and keeps
// those mappings alive: leases are renewed at half their lifetime, the router
// is checked cheaply every CheckInterval so a reboot (epoch going back, control
// URL gone, mapping missing, new external address) is noticed within a minute
// and the mappings are made again, and every mapping is deleted on clean
// shutdown. Mappings left behind by an earlier run are removed at start, using
// the state file.
//
// # Choice of protocol
//
// All enabled protocols are probed in parallel, each with a short timeout
// (NAT-PMP external-address request, PCP ANNOUNCE, SSDP M-SEARCH to the
// multicast group and unicast to the gateway). One protocol is then used for
// all mappings, preferring PCP, then NAT-PMP, then UPnP: the first two carry
// an epoch in every reply, which makes the periodic check one small UDP
// exchange and reboot detection exact, while UPnP needs a SOAP call per
// mapping to notice a lost one. PCP goes first because the per-mapping nonce
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
package portmap
