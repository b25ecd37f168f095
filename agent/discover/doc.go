// Package discover finds IP cameras on the home LAN for `porthole-agent
// discover`: an ONVIF WS-Discovery probe (multicast on the LAN interfaces, or
// unicast to given hosts), ONVIF device and media queries (stream and
// snapshot URIs, with a WS-Security UsernameToken when credentials are
// given), and RTSP/HTTP probes of common ports on each answering host. It
// renders what it learned as ready-to-paste services: entries for agent.yaml.
//
// Everything a camera (or a stranger on the LAN) sends is read with size
// limits and timeouts; the camera password is never printed or logged.
package discover
