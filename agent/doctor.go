package agent

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/porthole-dev/porthole/agent/publicip"
	"github.com/porthole-dev/porthole/internal/config"
)

// DetectPublicIPv4 asks the config's https and dns public-address sources
// once (not the relay's or the router's, which need a running agent): for
// porthole-agent doctor.
func DetectPublicIPv4(ctx context.Context, ac *config.Agent) (netip.Addr, error) {
	pc, err := publicIPConfig(ac.PublicIP, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return netip.Addr{}, err
	}
	pc.IPv6 = false
	res, err := publicip.New(pc).Detect(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	if res.V4Err != nil {
		return netip.Addr{}, res.V4Err
	}
	return res.V4, nil
}
