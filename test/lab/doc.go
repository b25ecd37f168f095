// Package lab is Porthole's network-namespace lab: a home network with a real
// router daemon (miniupnpd 2.3.1, nftables backend: UPnP IGD, NAT-PMP, PCP),
// an "internet" namespace for the relay, and an optional carrier-grade NAT
// between them, all built per test with `ip netns`, veth pairs and nftables.
//
// Up builds one lab for one test and tears it down in t.Cleanup; Start runs a
// program inside one of its namespaces. Tests skip loudly unless they run as
// root with the lab's Debian packages installed (test/lab/deps.sh). Traffic
// stays inside the namespaces the lab creates. See README.md for the topology
// and the pitfalls it works around.
package lab
