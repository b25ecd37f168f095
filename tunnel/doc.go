// Package tunnel holds both halves of the agent<->relay protocol side by side,
// over a [github.com/porthole-dev/porthole/tunnel/transport.Conn] (QUIC, or TLS over TCP when UDP is blocked):
//
//   - client.go, the agent's half ([Client]): dial (dial.go: QUIC first, TCP when
//     QUIC has not connected within QUICWait, back to QUIC when it works again),
//     handshake, service registration, heartbeat, the control reader, viewer
//     streams handed to a [StreamHandler], [Client.Probe] and
//     [Client.AnswerProbe] for the direct listeners. [Client.Run] reconnects
//     forever with jittered exponential backoff.
//   - server.go, the relay's half ([Server]): the pre-auth limits (auth deadline,
//     a cap on connections still authenticating, a Retry hint for QUIC),
//     authentication, and per session ([ServerSession]) the control loop with a
//     budget per message kind, the heartbeat deadline, viewer streams and probes.
//
// The wire format itself (messages, framing, codes, the probe line, the datagram
// header) is package proto; its doc walks through the flow. What the relay does
// with a session (its listeners, which ports an agent may use, what a probe may
// dial) stays in package relay, wired in through [ServerConfig]'s funcs.
package tunnel
