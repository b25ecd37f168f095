// Package porthole is the root of the Porthole module: remote access to home IP
// cameras through a home agent and a relay. The programs live in
// agent/cmd/porthole-agent and relay/cmd/porthole-relay; see README.md.
package porthole
