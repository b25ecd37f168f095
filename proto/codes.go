package proto

import "fmt"

// CloseCode is the application error code a tunnel connection is closed with
// (either side). Values are part of the wire format: never renumber.
type CloseCode uint64

// Connection close codes.
const (
	CloseNormal       CloseCode = 0 // orderly end (agent shutting down, session over)
	CloseAuthFailed   CloseCode = 1 // a token proof did not verify
	CloseReplaced     CloseCode = 2 // a newer session of the same agent took over
	CloseShuttingDown CloseCode = 3 // the relay is stopping
	CloseProtocol     CloseCode = 4 // malformed or unexpected message
	// CloseOverBudget: the agent sent more control messages of one kind than its
	// budget allows (see the package doc, "Budgets").
	CloseOverBudget CloseCode = 5
	// CloseHeartbeatTimeout: no Ping from the agent for the relay's deadline.
	CloseHeartbeatTimeout CloseCode = 6
	// CloseAuthTimeout: the handshake did not finish within the relay's auth deadline.
	CloseAuthTimeout CloseCode = 7
	// CloseBusy: too many connections are authenticating at once; try again later.
	CloseBusy CloseCode = 8
)

func (c CloseCode) String() string {
	switch c {
	case CloseNormal:
		return "normal"
	case CloseAuthFailed:
		return "authentication failed"
	case CloseReplaced:
		return "replaced by a newer session"
	case CloseShuttingDown:
		return "relay shutting down"
	case CloseProtocol:
		return "protocol error"
	case CloseOverBudget:
		return "control message budget exceeded"
	case CloseHeartbeatTimeout:
		return "heartbeat timeout"
	case CloseAuthTimeout:
		return "authentication timeout"
	case CloseBusy:
		return "relay busy"
	}
	return fmt.Sprintf("code %d", uint64(c))
}

// StreamCode is the error code a stream is aborted with. Values are part of the
// wire format.
type StreamCode uint64

// Stream error codes.
const (
	// StreamAborted: the other side of the splice failed, or the gateway shut down.
	StreamAborted StreamCode = 1
	// StreamRefused: the service is unknown, not authorized, or its target is unreachable.
	StreamRefused StreamCode = 2
)
