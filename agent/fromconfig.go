package agent

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/porthole-dev/porthole/agent/ddns"
	"github.com/porthole-dev/porthole/agent/publicip"
	"github.com/porthole-dev/porthole/agent/wg"
	"github.com/porthole-dev/porthole/agent/wg/invite"
	"github.com/porthole-dev/porthole/internal/config"
)

// This file maps agent.yaml's types onto the libraries' own Config structs:
// the libraries (agent/ddns, agent/publicip, agent/portmap) don't import
// internal/config, so each can be used and tested without a config file.

// ddnsProviderConfig maps the ddns.provider section onto ddns's ProviderConfig.
func ddnsProviderConfig(p config.Provider) ddns.ProviderConfig {
	return ddns.ProviderConfig{
		Type:     p.Type,
		Zone:     p.Zone,
		APIToken: p.APIToken,
		BaseURL:  p.BaseURL,
		Username: p.Username,
		Password: p.Password,
		Token:    p.Token,
		Server:   p.Server,
		KeyName:  p.KeyName,
		KeyAlg:   p.KeyAlg,
		Key:      p.Key,
	}
}

// newUpdater builds the provider and the Updater for the ddns section, with
// the state file in stateDir. Delete-on-exit (c.DeleteOnExit) is Run's to do.
func newUpdater(c config.DDNS, stateDir string, opts ddns.ProviderOptions) (*ddns.Updater, error) {
	p, err := ddns.NewProvider(ddnsProviderConfig(c.Provider), opts)
	if err != nil {
		return nil, err
	}
	return ddns.New(ddns.UpdaterConfig{
		Provider:    p,
		Hostname:    c.Hostname,
		TTL:         c.TTL,
		MinInterval: c.MinInterval,
		StateDir:    stateDir,
		Logger:      opts.Logger,
	})
}

// publicIPConfig builds the Detector's Config from the publicip section.
// relay answers the address the relay observes for the agent, router the
// router's external address; a nil func leaves that source out (no relay
// configured, direct mode off). c.Sources empty means every kind.
func publicIPConfig(c config.PublicIP, relay, router publicip.LookupFunc, log *slog.Logger) (publicip.Config, error) {
	kinds := c.Sources
	if len(kinds) == 0 {
		kinds = config.PublicIPSources
	}
	cfg := publicip.Config{
		MinAgree:        c.MinAgree,
		Accept:          c.Accept,
		Logger:          log,
		IPv6:            c.IPv6,
		IPv6InterfaceID: c.IPv6InterfaceID,
	}
	for _, k := range kinds {
		switch k {
		case "relay":
			if relay != nil {
				cfg.Sources = append(cfg.Sources, publicip.NewFuncSource(publicip.SourceRelay, relay))
			}
		case "router":
			if router != nil {
				cfg.Sources = append(cfg.Sources, publicip.NewFuncSource(publicip.SourceRouter, router))
				cfg.Router = publicip.SourceRouter
			}
		case "https":
			srcs, err := publicip.HTTPSources(c.HTTPS, log)
			if err != nil {
				return publicip.Config{}, fmt.Errorf("publicip.https: %w", err)
			}
			cfg.Sources = append(cfg.Sources, srcs...)
		case "dns":
			srcs, err := publicip.DNSSources(c.DNS)
			if err != nil {
				return publicip.Config{}, fmt.Errorf("publicip.dns: %w", err)
			}
			cfg.Sources = append(cfg.Sources, srcs...)
		default:
			return publicip.Config{}, fmt.Errorf("publicip.sources: unknown source %q", k)
		}
	}
	return cfg, nil
}

// ConfigWarnings are the problems of ac that only the libraries can see:
// settings the configured DNS provider can't honour (asked of the provider
// type's ddns.Capabilities). porthole-agent prints them after
// config.Agent.Warnings, at -check and at start.
func ConfigWarnings(ac *config.Agent) []string {
	if ac == nil || ac.DDNS == nil {
		return nil
	}
	d := ac.DDNS
	caps, err := ddns.TypeCapabilities(d.Provider.Type)
	if err != nil {
		return nil // config validation already refused the type
	}
	var out []string
	if d.DeleteOnExit && !caps.Delete {
		out = append(out, fmt.Sprintf("ddns.delete_on_exit: provider %s can't delete records; they stay when the agent stops", d.Provider.Type))
	}
	if d.TTL != config.DefaultDDNSTTL && !caps.TTL {
		out = append(out, fmt.Sprintf("ddns.ttl: provider %s sets its own TTL; %s is ignored", d.Provider.Type, d.TTL.Round(time.Second)))
	}
	return out
}

// wireGuardFromConfig maps the wireguard: section and the invite store in
// state_dir (agent/wg/invite) onto WireGuardConfig: the agent's key (made
// and saved on first use, as porthole-agent invite does), and the phones,
// watched so that invite and invite -revoke apply without a restart. A phone
// whose viewer is no longer under viewers: is left out, with a warning.
func wireGuardFromConfig(ac *config.Agent, log *slog.Logger) (*WireGuardConfig, error) {
	w := ac.WireGuard
	store, err := invite.New(invite.Config{StateDir: ac.StateDir, Address: w.Address, Logger: log.With("part", "wireguard")})
	if err != nil {
		return nil, fmt.Errorf("agent: wireguard: %w", err)
	}
	key, err := store.PrivateKey()
	if err != nil {
		return nil, fmt.Errorf("agent: wireguard: %w", err)
	}
	peers := func(ps []invite.Peer) []wg.Peer {
		out := make([]wg.Peer, 0, len(ps))
		for _, p := range ps {
			if _, ok := ac.Viewers[p.Viewer]; !ok {
				log.Warn("wireguard: a phone's viewer is not under viewers: any more; the phone is refused until the viewer is back or the phone is revoked",
					"phone", p.Name, "viewer", p.Viewer, "fix", "porthole-agent invite -revoke "+p.Name)
				continue
			}
			out = append(out, wg.Peer{Name: p.Name, PublicKey: wg.Key(p.PublicKey), AllowedIP: p.Address, Viewer: p.Viewer})
		}
		return out
	}
	cfg := &WireGuardConfig{
		PrivateKey: wg.Key(key), Port: w.LocalPort(), Address: w.Address, LANAddresses: w.LANAddresses,
		// No Peers at start: Watch delivers them at once, and a damaged
		// peers file then means no phones (logged), not an agent that
		// won't start for its cameras.
		Watch: func(ctx context.Context, fn func([]wg.Peer)) error {
			return store.Watch(ctx, func(ps []invite.Peer) { fn(peers(ps)) })
		},
	}
	return cfg, nil
}
