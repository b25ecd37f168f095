// Package publicip finds the home's public IPv4 and IPv6 addresses without
// trusting any single echo service.
//
// A Detector asks all its sources in parallel (the address the relay
// observes for the tunnel, HTTPS echo services, DNS whoami over UDP and
// DoH, the router's external address), per family. Each answer must be a
// global unicast address (Valid); private, CGNAT, documentation, HTML or
// garbage answers are logged and not counted. An address is reported only
// when at least MinAgree sources agree on it and no other address has as
// many votes; otherwise nothing is reported and one log line lists every
// source's answer. Services run by one operator (api.ipify.org and
// api64.ipify.org; Cloudflare's DNS, DoH and icanhazip) vote once.
//
// IPv6 sources vote on the /64 prefix, since a host's temporary addresses
// differ per connection; the published address is the prefix with a
// configured interface ID, else this host's stable address in it, else the
// address most sources saw.
//
// Detect returns as soon as the outcome can't change, or shortly (Settle)
// after a majority formed, so one hanging service doesn't delay a change.
// ClassifyNAT tells CGNAT and double NAT apart from a direct connection, and
// Watcher signals local address changes (rtnetlink) for an immediate re-check.
package publicip
