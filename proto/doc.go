// Package proto is the wire protocol between porthole-agent and porthole-relay, and
// nothing else: versions, message types, framing, size limits and the authentication
// proofs. It imports nothing else of this module (a test enforces it).
//
// # Transport
//
// The agent dials the relay's UDP port with QUIC (TLS 1.3, ALPN [ALPN]). The relay's
// certificate may be self-signed: trust does not come from the certificate but from
// the token both sides know, bound to this very TLS connection.
//
// # Control stream
//
// The agent opens the first bidirectional stream: the control stream. It carries
// frames: a 4-byte big-endian length, then one type byte, then a JSON body; a frame's
// length (type byte included) is at most [MaxFrame]. Unknown types are skipped so that
// newer peers can add messages. The flow:
//
//	agent                                    relay
//	Hello{Version, Name}            ->
//	                                <-       RelayProof{MAC_relay}
//	(agent checks MAC_relay; on mismatch it closes: wrong token or forged relay)
//	AgentProof{MAC_agent}           ->
//	                                <-       Welcome{Observed, Heartbeat}   or Refused
//	Register{Services}              ->
//	                                <-       Registered{per service: accepted or reason}
//	Ping{Seq}  (every Heartbeat)    ->
//	                                <-       Pong{Seq, Observed}
//	ProbeRequest{...}               ->       (the relay dials the agent's public address)
//	                                <-       ProbeResult{...}
//
// MAC_relay and MAC_agent are HMAC-SHA256 keyed by the token over a role label, the
// agent's name and 32 bytes of TLS exporter output ([ExporterLabel]) of this
// connection; see [RelayProofMAC] and [AgentProofMAC]. The token never crosses the
// wire, a recorded handshake is useless on another connection (its exporter differs),
// and a forged relay, proving first, can't prove anything and learns only a MAC it
// cannot use. For an unknown agent name the relay sends a proof keyed by random bytes,
// so a scanner can't tell unknown names from wrong tokens.
//
// # Viewer streams
//
// For each viewer connection the relay opens a bidirectional stream and writes a
// [StreamHeader] (see [StreamHeader.MarshalBinary]): version, kind, service name and
// the viewer's address. Then raw bytes flow both ways; closing the write side (QUIC
// FIN) is the half-close of TCP. The agent checks every stream against its own
// registered services and access rules, not only at login.
//
// # Datagrams
//
// QUIC datagrams are reserved for WireGuard packets (a phone's MTU of 1280 fits).
package proto
