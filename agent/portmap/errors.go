package portmap

import (
	"errors"
	"fmt"
)

// Sentinel errors callers can branch on with errors.Is.
var (
	// ErrNoGateway: no default gateway was found (no network, or no route).
	ErrNoGateway = errors.New("no default gateway")
	// ErrNoRouter: no router answered UPnP, NAT-PMP or PCP.
	ErrNoRouter = errors.New("no router answered UPnP, NAT-PMP or PCP")
	// ErrNotSupported: the router does not speak the protocol or the request.
	// NATPMPError, PCPError and UPnPError match it for their "unsupported" codes.
	ErrNotSupported = errors.New("not supported by the router")
	// ErrNoResponse: the router did not answer in time.
	ErrNoResponse = errors.New("no response from router")
	// ErrMalformed: a reply could not be parsed.
	ErrMalformed = errors.New("malformed reply")
	// ErrAlreadyRunning: Run was called twice on one Client.
	ErrAlreadyRunning = errors.New("portmap: Run already called")
)

// UPnPError is an error a router returned for a UPnP IGD SOAP action.
type UPnPError struct {
	Action string // e.g. "AddPortMapping"
	Code   int    // UPnP errorCode: 402, 501, 606, 718, 725, ...
	Desc   string // the router's errorDescription, as sent
}

// upnpMeanings says what each IGD error code means for the user.
var upnpMeanings = map[int]string{
	401: "invalid action: the router does not implement it",
	402: "invalid arguments (some routers say this when they accept only permanent leases)",
	501: "action failed: the router refuses port forwarding (UPnP port forwarding disabled, or its WAN address is private: carrier-grade NAT?)",
	606: "not authorized: the router does not allow this port (many allow only ports >= 1024, or need UPnP port changes enabled)",
	714: "no such mapping",
	715: "wildcard not permitted in source IP",
	716: "wildcard not permitted in external port",
	718: "conflict: the port is already forwarded to another device; remove that forwarding on the router or pick another port",
	724: "internal and external ports must be the same",
	725: "the router accepts only permanent leases",
	726: "remote host must be a wildcard",
	727: "external port must be a wildcard",
	728: "no port maps available: the router's mapping table is full",
	729: "conflict with another mechanism",
	732: "wildcard not permitted in internal port",
}

func (e *UPnPError) Error() string {
	m := upnpMeanings[e.Code]
	if m == "" {
		m = e.Desc
	}
	return fmt.Sprintf("UPnP %s: error %d (%s): %s", e.Action, e.Code, e.Desc, m)
}

// Is makes errors.Is(err, ErrNotSupported) true for "invalid action".
func (e *UPnPError) Is(target error) bool {
	return target == ErrNotSupported && (e.Code == 401 || e.Code == 602)
}

// NATPMPError is a non-zero NAT-PMP result code (RFC 6886 section 3.5).
type NATPMPError struct {
	Code uint16
}

var natpmpMeanings = map[uint16]string{
	1: "unsupported version",
	2: "not authorized/refused: NAT-PMP port mapping is disabled on the router",
	3: "network failure: the router has no external address (WAN down, or carrier-grade NAT)",
	4: "out of resources: the router's mapping table is full",
	5: "unsupported opcode",
}

func (e *NATPMPError) Error() string {
	m := natpmpMeanings[e.Code]
	if m == "" {
		m = "unknown result code"
	}
	return fmt.Sprintf("NAT-PMP result %d: %s", e.Code, m)
}

// Is makes errors.Is(err, ErrNotSupported) true for unsupported version/opcode.
func (e *NATPMPError) Is(target error) bool {
	return target == ErrNotSupported && (e.Code == 1 || e.Code == 5)
}

// PCPError is a non-zero PCP result code (RFC 6887 section 7.4).
type PCPError struct {
	Code uint8
	// Lifetime is how long (seconds) the router says the error stays true.
	Lifetime uint32
}

var pcpNames = map[uint8]string{
	1:  "UNSUPP_VERSION",
	2:  "NOT_AUTHORIZED: PCP port mapping is disabled on the router, or another client owns the mapping",
	3:  "MALFORMED_REQUEST",
	4:  "UNSUPP_OPCODE",
	5:  "UNSUPP_OPTION",
	6:  "MALFORMED_OPTION",
	7:  "NETWORK_FAILURE: the router has no external address",
	8:  "NO_RESOURCES: the router refuses to create mappings (port forwarding disabled, or carrier-grade NAT)",
	9:  "UNSUPP_PROTOCOL",
	10: "USER_EX_QUOTA: too many mappings for this host",
	11: "CANNOT_PROVIDE_EXTERNAL: the port asked for is not available",
	12: "ADDRESS_MISMATCH: the router sees this host at another address (another NAT in between?)",
	13: "EXCESSIVE_REMOTE_PEERS",
}

func (e *PCPError) Error() string {
	m := pcpNames[e.Code]
	if m == "" {
		m = "unknown result code"
	}
	return fmt.Sprintf("PCP result %d: %s", e.Code, m)
}

// Is makes errors.Is(err, ErrNotSupported) true for unsupported version/opcode/protocol.
func (e *PCPError) Is(target error) bool {
	return target == ErrNotSupported && (e.Code == 1 || e.Code == 4 || e.Code == 9)
}

// PortMismatchError says the router granted another external port than the
// one asked for. The mapping was released: the service's URL would not work.
type PortMismatchError struct {
	Wanted, Granted uint16
}

func (e *PortMismatchError) Error() string {
	return fmt.Sprintf("router granted port %d instead of %d (released: the service's public port must be the same on the relay and the router)", e.Granted, e.Wanted)
}
