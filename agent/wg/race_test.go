//go:build race

package wg

// floodBurst is TestHandshakeFlood's initiations a millisecond: 2,000 a
// second from one address under the race detector, which slows the agent's
// handshake checks tenfold and more; enough to put it under load.
const floodBurst = 2
