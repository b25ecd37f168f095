// Package gateway is the viewer-facing side of Porthole, shared by the relay's
// service listeners and the agent's direct listeners, so the code facing the
// internet is the same on both paths. Each exposed service gets a Listener;
// every viewer connection goes through one pipeline:
//
//	accept   a net.Listener (TCP, TLS, any wrapper) or ServeConn (a tunnel stream)
//	limits   a slot in the service (MaxConns) and in the daemon's shared Limiter:
//	         total and per source; a source keeps few idle connections (nothing
//	         moved for a grace period). A refused viewer gets a TCP reset (a
//	         tunnel stream: Refuser) and a rate-limited log line naming the
//	         limit and what to change
//	sniff    Intercept (the agent answers the relay's probes), then the
//	         first-byte deadline for protocols whose viewer speaks first
//	TLS      where the service has it (Config.TLS): a first byte that is not
//	         a handshake goes to Config.Plain (RedirectHTTPS: a 308 to https;
//	         RedirectRTSPS: a 301 to rtsps);
//	         the handshake finishes under the same deadline (default
//	         DefaultHandshakeTimeout) or the viewer is reset; an ACME
//	         TLS-ALPN-01 check ends after its handshake. The handler gets the
//	         *tls.Conn (SNI, ALPN); such a conn never takes the kernel splice
//	admit    the service's access Policy (viewer logins come with TLS)
//	handler  one Handler per service kind: tcp now, http and rtsp next
//	dial     the backend Dialer: the camera on the LAN, or a tunnel stream
//
// The tcp handler splices with half-close; between two TCP sockets the kernel
// moves the bytes (splice(2)), otherwise a pooled buffer does. Byte counters
// move per chunk while connections run. No limit cuts a connection once bytes
// flow: long-lived video runs as long as the viewer watches.
package gateway
