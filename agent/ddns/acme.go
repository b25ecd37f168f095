package ddns

import (
	"errors"
	"fmt"
	"strings"

	"github.com/libdns/libdns"
	librfc2136 "github.com/libdns/rfc2136"
)

// ACMEDNSProvider writes and removes the TXT records of ACME DNS-01
// challenges, as certmagic's DNS01Solver wants (it finds the zone itself and
// passes it in).
type ACMEDNSProvider interface {
	libdns.RecordAppender
	libdns.RecordDeleter
}

// ErrNoDNS01 is returned by NewACMEDNSProvider for provider types that
// cannot (or here do not yet) solve DNS-01: certificates then come by
// TLS-ALPN-01.
var ErrNoDNS01 = errors.New("provider type cannot solve ACME DNS-01 challenges")

// NewACMEDNSProvider returns a DNS-01 provider on the account p describes,
// for the types that can write TXT records: cloudflare (its API token needs
// Zone.DNS edit), rfc2136 (the TSIG key must be set and allowed to update
// _acme-challenge names). duckdns can hold one TXT record but is not wired
// up yet: ErrNoDNS01, like the dyndns2 family.
func NewACMEDNSProvider(p ProviderConfig, opts ProviderOptions) (ACMEDNSProvider, error) {
	opts = opts.withDefaults()
	switch strings.ToLower(p.Type) {
	case "cloudflare":
		prov, err := newCloudflare(p, opts)
		if err != nil {
			return nil, err
		}
		// The same libdns client the DDNS updates use, TXT records included.
		c, ok := prov.(*libdnsProvider).client.(ACMEDNSProvider)
		if !ok {
			return nil, fmt.Errorf("cloudflare: %w", ErrNoDNS01)
		}
		return c, nil
	case "rfc2136":
		prov, err := newRFC2136(p, opts) // the same checks as for DDNS
		if err != nil {
			return nil, err
		}
		r := prov.(*rfc2136)
		if r.keyName == "" {
			return nil, fmt.Errorf("%w: rfc2136 needs key_name and key for ACME DNS-01", ErrBadConfig)
		}
		return &librfc2136.Provider{KeyName: r.keyName, KeyAlg: r.keyAlg, Key: r.key, Server: r.server}, nil
	}
	if _, err := TypeCapabilities(p.Type); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%s: %w", p.Type, ErrNoDNS01)
}
