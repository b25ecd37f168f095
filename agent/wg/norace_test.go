//go:build !race

package wg

// floodBurst is TestHandshakeFlood's initiations a millisecond: 16,000 a
// second from one address (19 Mbit/s).
const floodBurst = 16
