package discover

import (
	"bytes"
	"crypto/rand"
	"encoding/xml"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// WS-Discovery constants (ONVIF Core, WS-Discovery 2005/04).
const (
	// WSDPort is the WS-Discovery UDP port cameras listen on.
	WSDPort = 3702
	// multicastGroup is where WS-Discovery probes go (IPv4).
	multicastGroup = "239.255.255.250"
	// maxDatagram bounds one WS-Discovery answer (the largest UDP payload).
	maxDatagram = 64 << 10
	// maxMatchesPerAnswer, maxScopes and maxXAddrs bound what one answer may
	// make us keep.
	maxMatchesPerAnswer = 8
	maxScopes           = 64
	maxXAddrs           = 8
	maxFieldLen         = 1024
)

// ProbeMatch is one device's answer to a WS-Discovery probe.
type ProbeMatch struct {
	// Endpoint is the device's WS-Addressing address, usually urn:uuid:...
	Endpoint string `json:"endpoint,omitempty"`
	// Types are the device's types, e.g. dn:NetworkVideoTransmitter.
	Types []string `json:"types,omitempty"`
	// Scopes are the device's scope URIs (onvif://www.onvif.org/name/...).
	Scopes []string `json:"scopes,omitempty"`
	// XAddrs are the device service URLs (http://host/onvif/device_service).
	XAddrs []string `json:"xaddrs,omitempty"`
}

// probeMessage is a WS-Discovery Probe for ONVIF video transmitters; id is
// its MessageID.
func probeMessage(id string) []byte {
	return []byte(`<?xml version="1.0" encoding="UTF-8"?>` +
		`<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"` +
		` xmlns:w="http://schemas.xmlsoap.org/ws/2004/08/addressing"` +
		` xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"` +
		` xmlns:dn="http://www.onvif.org/ver10/network/wsdl">` +
		`<e:Header><w:MessageID>` + id + `</w:MessageID>` +
		`<w:To e:mustUnderstand="true">urn:schemas-xmlsoap-org:ws:2005:04:discovery</w:To>` +
		`<w:Action e:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</w:Action>` +
		`</e:Header><e:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></e:Body></e:Envelope>`)
}

// newMessageID returns a random urn:uuid (version 4).
func newMessageID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// ErrNotProbeMatches means a datagram on the discovery socket was not a
// WS-Discovery ProbeMatches message.
var ErrNotProbeMatches = errors.New("not a WS-Discovery ProbeMatches answer")

type probeMatchesEnvelope struct {
	RelatesTo string `xml:"Header>RelatesTo"`
	Matches   []struct {
		Endpoint string `xml:"EndpointReference>Address"`
		Types    string `xml:"Types"`
		Scopes   string `xml:"Scopes"`
		XAddrs   string `xml:"XAddrs"`
	} `xml:"Body>ProbeMatches>ProbeMatch"`
}

// decodeProbeMatches parses one WS-Discovery answer. Only the first
// maxMatchesPerAnswer matches and the first maxScopes scopes and maxXAddrs
// addresses of each are kept.
func decodeProbeMatches(b []byte) (relatesTo string, matches []ProbeMatch, err error) {
	if len(b) > maxDatagram {
		return "", nil, fmt.Errorf("%w: %d bytes, more than %d", ErrNotProbeMatches, len(b), maxDatagram)
	}
	var env probeMatchesEnvelope
	if err := xml.NewDecoder(bytes.NewReader(b)).Decode(&env); err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrNotProbeMatches, err)
	}
	if len(env.Matches) == 0 {
		return "", nil, ErrNotProbeMatches
	}
	for i, m := range env.Matches {
		if i == maxMatchesPerAnswer {
			break
		}
		pm := ProbeMatch{
			Endpoint: clip(strings.TrimSpace(m.Endpoint)),
			Types:    fieldList(m.Types, maxScopes),
			Scopes:   fieldList(m.Scopes, maxScopes),
		}
		for _, x := range fieldList(m.XAddrs, maxXAddrs) {
			if u, err := url.Parse(x); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
				pm.XAddrs = append(pm.XAddrs, x)
			}
		}
		matches = append(matches, pm)
	}
	return clip(strings.TrimSpace(env.RelatesTo)), matches, nil
}

// fieldList splits a whitespace-separated list, keeping at most max items of
// at most maxFieldLen bytes each.
func fieldList(s string, max int) []string {
	var out []string
	for _, f := range strings.Fields(s) {
		if len(out) == max {
			break
		}
		out = append(out, clip(f))
	}
	return out
}

// clip bounds a string that came from the network.
func clip(s string) string {
	if len(s) > maxFieldLen {
		return s[:maxFieldLen]
	}
	return s
}

// scopeValue returns the decoded value of the ONVIF scope
// onvif://www.onvif.org/<kind>/<value>, or "".
func scopeValue(scopes []string, kind string) string {
	prefix := "onvif://www.onvif.org/" + kind + "/"
	for _, s := range scopes {
		if len(s) > len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
			v, err := url.PathUnescape(s[len(prefix):])
			if err != nil {
				v = s[len(prefix):]
			}
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// xaddrHost returns the host of a service URL as an address, if it is an IP
// literal.
func xaddrHost(x string) (netip.Addr, bool) {
	u, err := url.Parse(x)
	if err != nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}
