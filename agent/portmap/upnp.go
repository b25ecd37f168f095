package portmap

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"
	"github.com/huin/goupnp/soap"
)

// igdConn is what WANIPConnection1/2 and WANPPPConnection1 clients have in common.
type igdConn interface {
	AddPortMappingCtx(ctx context.Context, remoteHost string, extPort uint16, proto string, intPort uint16, intClient string, enabled bool, desc string, lease uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, extPort uint16, proto string) error
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
	GetSpecificPortMappingEntryCtx(ctx context.Context, remoteHost string, extPort uint16, proto string) (uint16, string, bool, string, uint32, error)
}

var (
	_ igdConn = (*internetgateway2.WANIPConnection1)(nil)
	_ igdConn = (*internetgateway2.WANIPConnection2)(nil)
	_ igdConn = (*internetgateway2.WANPPPConnection1)(nil)
)

// upnpMapper maps ports through one IGD WAN connection service. Used by the Run goroutine only.
type upnpMapper struct {
	conn          igdConn
	v2            *internetgateway2.WANIPConnection2 // for AddAnyPortMapping; nil on v1/PPP
	service       string                             // e.g. "WANIPConnection:2"
	location      string
	bootID        string
	local         netip.Addr
	onlyPermanent bool // router answered 725/402 to a leased mapping
	noAddAny      bool // router lists IGDv2 but lacks AddAnyPortMapping
}

func (p *upnpMapper) name() string { return "upnp" }

// upnpErr turns goupnp's errors into *UPnPError (SOAP faults with a UPnP
// code) or wraps ErrNoResponse (transport failures: the control URL is gone).
func upnpErr(action string, err error) error {
	if err == nil {
		return nil
	}
	var f *soap.SOAPFaultError
	if errors.As(err, &f) && f.Detail.UPnPError.Errorcode != 0 {
		return &UPnPError{Action: action, Code: f.Detail.UPnPError.Errorcode, Desc: strings.TrimSpace(f.Detail.UPnPError.ErrorDescription)}
	}
	if errors.As(err, &f) {
		return fmt.Errorf("UPnP %s: SOAP fault %q: %w", action, f.FaultString, ErrMalformed)
	}
	return fmt.Errorf("UPnP %s: %w: %w", action, ErrNoResponse, err)
}

func upnpCode(err error) int {
	var ue *UPnPError
	if errors.As(err, &ue) {
		return ue.Code
	}
	return 0
}

func upnpProto(p string) string { return strings.ToUpper(p) }

func (p *upnpMapper) addOnce(ctx context.Context, r request, lease uint32) (uint16, error) {
	proto := upnpProto(r.Proto)
	if p.v2 != nil && !p.noAddAny {
		port, err := p.v2.AddAnyPortMappingCtx(ctx, "", r.ExternalPort, proto, r.InternalPort, r.Local.String(), true, r.Description, lease)
		err = upnpErr("AddAnyPortMapping", err)
		if !errors.Is(err, ErrNotSupported) {
			if err == nil && port == 0 {
				port = r.ExternalPort
			}
			return port, err
		}
		p.noAddAny = true
	}
	err := p.conn.AddPortMappingCtx(ctx, "", r.ExternalPort, proto, r.InternalPort, r.Local.String(), true, r.Description, lease)
	return r.ExternalPort, upnpErr("AddPortMapping", err)
}

func (p *upnpMapper) add(ctx context.Context, r request) (grant, error) {
	lease := uint32(r.Lease / time.Second)
	if p.onlyPermanent {
		lease = 0
	}
	port, err := p.addOnce(ctx, r, lease)
	if c := upnpCode(err); lease != 0 && (c == 725 || c == 402) {
		// OnlyPermanentLeasesSupported (IGDv1 routers may say 402 instead):
		// map without a lease and delete it on exit.
		p.onlyPermanent = true
		lease = 0
		port, err = p.addOnce(ctx, r, 0)
	}
	if err != nil {
		return grant{}, err
	}
	g := grant{ExternalPort: port, Lifetime: time.Duration(lease) * time.Second}
	// The lease the router really keeps (miniupnpd clamps; 0 may become 7 days).
	_, _, _, _, l, err := p.conn.GetSpecificPortMappingEntryCtx(ctx, "", port, upnpProto(r.Proto))
	if err == nil && l > 0 {
		g.Lifetime = time.Duration(l) * time.Second
	}
	return g, nil
}

func (p *upnpMapper) remove(ctx context.Context, r request, granted uint16) error {
	err := upnpErr("DeletePortMapping", p.conn.DeletePortMappingCtx(ctx, "", granted, upnpProto(r.Proto)))
	if upnpCode(err) == 714 {
		return nil
	}
	return err
}

// verify asks whether the router still forwards granted to us.
func (p *upnpMapper) verify(ctx context.Context, r request, granted uint16) (bool, error) {
	port, client, _, _, _, err := p.conn.GetSpecificPortMappingEntryCtx(ctx, "", granted, upnpProto(r.Proto))
	err = upnpErr("GetSpecificPortMappingEntry", err)
	if upnpCode(err) == 714 {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	a, _ := netip.ParseAddr(client)
	return a.Unmap() == r.Local && port == r.InternalPort, nil
}

func (p *upnpMapper) check(ctx context.Context) (netip.Addr, bool, error) {
	s, err := p.conn.GetExternalIPAddressCtx(ctx)
	if err != nil {
		return netip.Addr{}, false, upnpErr("GetExternalIPAddress", err)
	}
	a, _ := netip.ParseAddr(strings.TrimSpace(s))
	return a.Unmap(), true, nil
}

func (p *upnpMapper) checksByRenewing() bool { return false }

func (p *upnpMapper) takeReset() bool { return false }

var _ mapper = (*upnpMapper)(nil)

// fetchRootDevice fetches and decodes an IGD root description with our own
// HTTP client (goupnp's uses the process-wide default client and proxy).
func fetchRootDevice(ctx context.Context, hc *http.Client, loc *url.URL) (*goupnp.RootDevice, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("UPnP description: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("UPnP description: %w: %w", ErrNoResponse, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("UPnP description %s: HTTP %d: %w", loc, resp.StatusCode, ErrNoResponse)
	}
	dec := xml.NewDecoder(io.LimitReader(resp.Body, 1<<20))
	dec.DefaultSpace = goupnp.DeviceXMLNamespace
	dec.CharsetReader = func(_ string, in io.Reader) (io.Reader, error) { return in, nil }
	root := new(goupnp.RootDevice)
	if err := dec.Decode(root); err != nil {
		return nil, fmt.Errorf("UPnP description %s: %w: %w", loc, ErrMalformed, err)
	}
	// Honour URLBase only when it names the host that served the description.
	base := loc
	if u, err := url.Parse(root.URLBaseStr); err == nil && root.URLBaseStr != "" && u.Hostname() == loc.Hostname() {
		base = u
	}
	root.SetURLBase(base)
	return root, nil
}

// upnpCandidate is one WAN connection service found in a description.
type upnpCandidate struct {
	service string
	conn    igdConn
	v2      *internetgateway2.WANIPConnection2
	sc      *goupnp.ServiceClient
}

func upnpCandidates(root *goupnp.RootDevice, loc *url.URL) []upnpCandidate {
	var out []upnpCandidate
	v2s, _ := internetgateway2.NewWANIPConnection2ClientsFromRootDevice(root, loc)
	for _, c := range v2s {
		out = append(out, upnpCandidate{"WANIPConnection:2", c, c, &c.ServiceClient})
	}
	v1s, _ := internetgateway2.NewWANIPConnection1ClientsFromRootDevice(root, loc)
	for _, c := range v1s {
		out = append(out, upnpCandidate{"WANIPConnection:1", c, nil, &c.ServiceClient})
	}
	ppps, _ := internetgateway2.NewWANPPPConnection1ClientsFromRootDevice(root, loc)
	for _, c := range ppps {
		out = append(out, upnpCandidate{"WANPPPConnection:1", c, nil, &c.ServiceClient})
	}
	return out
}

// upnpAt builds a mapper from the description at loc: the first WAN
// connection service (v2 first) whose GetExternalIPAddress answers, one that
// reports an address preferred (routers with several WAN connections).
// It returns the external address too (zero if the router reported none).
func upnpAt(ctx context.Context, hc *http.Client, loc *url.URL, bootID string, local netip.Addr) (*upnpMapper, netip.Addr, error) {
	root, err := fetchRootDevice(ctx, hc, loc)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	var fallback *upnpMapper
	var lastErr error = fmt.Errorf("UPnP %s: no WANIPConnection or WANPPPConnection service: %w", loc, ErrNotSupported)
	for _, c := range upnpCandidates(root, loc) {
		ctrl := c.sc.SOAPClient.EndpointURL
		if ctrl.Hostname() != loc.Hostname() || (ctrl.Scheme != "http" && ctrl.Scheme != "https") {
			lastErr = fmt.Errorf("UPnP %s: control URL on another host: %w", loc, ErrMalformed)
			continue
		}
		c.sc.SOAPClient.HTTPClient = *hc
		m := &upnpMapper{conn: c.conn, v2: c.v2, service: c.service, location: loc.String(), bootID: bootID, local: local}
		addr, _, err := m.check(ctx)
		if err != nil {
			lastErr = err
			continue
		}
		if addr.IsValid() {
			return m, addr, nil
		}
		if fallback == nil {
			fallback = m
		}
	}
	if fallback != nil {
		return fallback, netip.Addr{}, nil
	}
	return nil, netip.Addr{}, lastErr
}
