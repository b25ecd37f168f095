//go:build race

package tunnel

// Under the race detector a QUIC handshake costs several times more CPU.
const floodConns = 250
