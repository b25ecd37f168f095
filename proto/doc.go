// Package proto is the wire protocol between porthole-agent and porthole-relay, and
// nothing else: versions, message types, framing, size limits, the authentication
// proofs, every close and stream code ([CloseCode], [StreamCode]), the probe line
// and the datagram header. It imports nothing else of this module (a test enforces
// it). Both halves that speak it live side by side in package tunnel.
//
// # Transports
//
// The agent dials the relay's UDP port with QUIC (TLS 1.3, ALPN [ALPN]). When QUIC
// has not connected within about 2 s (UDP blocked), it dials TLS over TCP on the
// same port number, with yamux as the stream multiplexer, and while on TCP it
// retries QUIC about every 60 s (jittered) while no viewer is connected, moving
// back when QUIC connects
// (relay.transport: auto|quic|tcp in agent.yaml). Everything below is the same on
// both: streams with half-close, datagrams (as frames on TCP), close codes.
// The relay's certificate may be self-signed: trust does not come from the
// certificate but from the token both sides know, bound to this very TLS
// connection.
//
// # Control stream
//
// The agent opens the first bidirectional stream: the control stream. It carries
// frames: a 4-byte big-endian length, then one type byte, then a JSON body; a frame's
// length (type byte included) is at most [MaxFrame] (4 KiB before authentication).
// A reader's memory grows with the bytes that arrive, not with the declared length.
// Unknown types are skipped so that newer peers can add messages (the relay counts
// them against its budget for other kinds; see [ReadFrame]). The flow:
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
// # Limits before authentication
//
// The handshake must end within about 3 s of the connection's acceptance, or the
// relay closes it with [CloseAuthTimeout]. At most 64 connections may be
// authenticating at once; beyond that the relay closes new ones at once with
// [CloseBusy] (the agent retries with backoff), and while they pile up the QUIC
// listener answers new handshakes with a Retry (source-address validation).
//
// # Heartbeats
//
// The agent pings every Welcome.HeartbeatMillis (1 s by default); each Ping is
// padded ([PingPad]) so that a restarted relay answers it with a stateless reset. The
// agent drops a session without a Pong for 3 s. The relay closes a session without a
// Ping for three heartbeats (at most 5 s) with [CloseHeartbeatTimeout], closes its
// listeners and resets its viewers.
//
// # Budgets
//
// Each message kind has a token-bucket budget per session; a session over budget is
// closed with [CloseOverBudget]. The defaults (tunnel.DefaultBudgets): Ping 10/s
// (burst 20); Register burst 5, then one per 10 s; ProbeRequest burst 5, then one per
// 2 s per registered service (names not registered share one bucket), and 4/s for
// all services together; any other kind (unknown types included) burst 10, then 1/s. An agent re-verifies
// each direct path about every 30 s, far below these. At most one probe per service
// runs at a time and at most 4 per session; a ProbeRequest beyond that is answered
// at once with a refusal (not queued).
//
// # Viewer streams
//
// For each viewer connection the relay opens a bidirectional stream and writes a
// [StreamHeader] (see [StreamHeader.MarshalBinary]): version, kind, service name and
// the viewer's address. Then raw bytes flow both ways; closing the write side (QUIC
// FIN) is the half-close of TCP. A failure aborts the stream with a [StreamCode]
// ([StreamRefused]: unknown service, not allowed, camera unreachable;
// [StreamAborted]: the other side failed), and the viewer's TCP connection gets a
// reset, never a clean end. The agent checks every stream against its own
// registered services and access rules, not only at login.
//
// # Probes
//
// To verify a direct path the relay dials the agent's public address (only the
// address it observes, only in the agent's port range), writes [ProbeLine] and
// expects [ProbeAnswer], keyed by this session's exporter; see [ProbeMagic]. A
// ProbeRequest with Proto "udp" verifies the WireGuard port instead: the relay sends
// [UDPProbe] (never a WireGuard message) and expects the reply of [UDPProbeReply].
//
// # Datagrams
//
// Datagrams carry WireGuard packets (a phone's MTU of 1280 fits), each starting with
// a [DatagramHeader]: version and kind in one byte, then a flow id naming the phone's
// UDP flow at the relay. The agent registers its WireGuard port as a [Service] with
// Proto "udp"; the relay forwards each packet arriving there as a datagram and sends
// the agent's datagrams back to the flow's address, without reading them.
//
// # Close codes
//
// A connection is closed with a [CloseCode] the peer sees: [CloseNormal],
// [CloseAuthFailed], [CloseReplaced] (a newer session of the same agent),
// [CloseShuttingDown], [CloseProtocol], [CloseOverBudget], [CloseHeartbeatTimeout],
// [CloseAuthTimeout], [CloseBusy].
package proto
