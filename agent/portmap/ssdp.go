package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// ssdpResponse is what we use of an SSDP M-SEARCH reply.
type ssdpResponse struct {
	Location *url.URL
	ST       string
	USN      string
	Server   string
	BootID   string // BOOTID.UPNP.ORG: changes when the device restarts (UDA 1.1)
}

// parseSSDPResponse parses an SSDP search reply: an HTTP/1.x 200 status line
// and headers, of which LOCATION (an http URL with a host) is required.
func parseSSDPResponse(b []byte) (ssdpResponse, error) {
	var r ssdpResponse
	if len(b) > 8192 {
		return r, fmt.Errorf("SSDP reply of %d bytes: %w", len(b), ErrMalformed)
	}
	lines := strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
	status := strings.Fields(lines[0])
	if len(status) < 2 || !strings.HasPrefix(status[0], "HTTP/1.") || status[1] != "200" {
		return r, fmt.Errorf("SSDP reply status %.40q: %w", lines[0], ErrMalformed)
	}
	var loc string
	for _, l := range lines[1:] {
		if l == "" {
			break
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.ToUpper(strings.TrimSpace(k)) {
		case "LOCATION":
			loc = v
		case "ST":
			r.ST = v
		case "USN":
			r.USN = v
		case "SERVER":
			r.Server = v
		case "BOOTID.UPNP.ORG":
			r.BootID = v
		}
	}
	if loc == "" {
		return r, fmt.Errorf("SSDP reply without LOCATION: %w", ErrMalformed)
	}
	u, err := url.Parse(loc)
	if err != nil {
		return r, fmt.Errorf("SSDP LOCATION: %w: %w", ErrMalformed, err)
	}
	if u.Scheme != "http" || u.Hostname() == "" || u.User != nil {
		return r, fmt.Errorf("SSDP LOCATION %.80q is not an http URL: %w", loc, ErrMalformed)
	}
	r.Location = u
	return r, nil
}

// acceptLocation says whether we fetch a description from loc, announced by
// from: only from the sender itself, the gateway, or another LAN-local
// address, never from an arbitrary host some device names.
func acceptLocation(loc *url.URL, from, gw netip.Addr) bool {
	a, err := netip.ParseAddr(loc.Hostname())
	if err != nil {
		return false
	}
	a = a.Unmap()
	return a == from || a == gw || a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast()
}

var ssdpTargets = []string{
	"urn:schemas-upnp-org:device:InternetGatewayDevice:1",
	"urn:schemas-upnp-org:device:InternetGatewayDevice:2",
}

func mSearch(host, st string) []byte {
	return []byte("M-SEARCH * HTTP/1.1\r\nHOST: " + host + "\r\nST: " + st +
		"\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n\r\n")
}

// ssdpSearch sends M-SEARCHes for an IGD to each destination (the multicast
// group and the gateway's SSDP port) and calls found for each distinct usable
// LOCATION until found returns true or ctx ends.
func ssdpSearch(ctx context.Context, local netip.Addr, gw netip.Addr, dests []netip.AddrPort, found func(ssdpResponse) bool) error {
	laddr := &net.UDPAddr{}
	if local.IsValid() {
		laddr.IP = local.AsSlice()
	}
	conn, err := net.ListenUDP("udp4", laddr)
	if err != nil {
		return fmt.Errorf("SSDP: listen: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()

	sent := 0
	var sendErr error
	for _, d := range dests {
		for _, st := range ssdpTargets {
			if _, err := conn.WriteToUDPAddrPort(mSearch(d.String(), st), d); err != nil {
				sendErr = err
				continue
			}
			sent++
		}
	}
	if sent == 0 {
		return fmt.Errorf("SSDP: send: %w", sendErr)
	}
	seen := map[string]bool{}
	buf := make([]byte, 8193)
	for errs := 0; errs < 16; {
		if ctx.Err() != nil {
			return fmt.Errorf("SSDP: %w", ErrNoResponse)
		}
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if ctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
				return fmt.Errorf("SSDP: %w", ErrNoResponse)
			}
			errs++ // e.g. ICMP port unreachable from the unicast probe
			continue
		}
		r, err := parseSSDPResponse(buf[:n])
		if err != nil || !acceptLocation(r.Location, from.Addr().Unmap(), gw) {
			continue
		}
		key := r.Location.String()
		if seen[key] {
			continue
		}
		seen[key] = true
		if found(r) {
			return nil
		}
	}
	return fmt.Errorf("SSDP: %w", ErrNoResponse)
}
