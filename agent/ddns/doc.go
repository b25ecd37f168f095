// Package ddns keeps a hostname's A/AAAA records pointing where the agent
// wants (the relay, or the home's verified public address) at a DNS
// provider: Cloudflare (libdns), RFC 2136 with TSIG, DuckDNS and the dyndns2
// family (No-IP, Dynu, any dyndns2 server). The Updater writes only when the
// records differ from what it last published or read back, remembers that
// in state_dir, keeps writes a minimum interval apart, backs off with jitter
// on errors and stops on answers that say retrying is pointless.
//
// Each provider type declares what its protocol can do (Capabilities: read
// back, remove one family, delete, TTL, TXT) beside its implementation; the
// updater and the agent ask it rather than switching on type names. The
// package takes its own ProviderConfig and UpdaterConfig: the agent maps
// agent.yaml onto them.
package ddns
