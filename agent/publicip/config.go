package publicip

import (
	"fmt"
	"log/slog"

	"github.com/porthole-dev/porthole/internal/config"
)

// Names of the sources other packages feed through FromConfig.
const (
	SourceRelay  = "relay"
	SourceRouter = "router"
)

// FromConfig builds a Detector Config from the agent's publicip section.
// relay answers the address the relay observes for the agent, router the
// router's external address; a nil func leaves that source out (no relay
// configured, direct mode off). c.Sources empty means all four kinds.
func FromConfig(c config.PublicIP, relay, router LookupFunc, log *slog.Logger) (Config, error) {
	kinds := c.Sources
	if len(kinds) == 0 {
		kinds = config.PublicIPSources
	}
	cfg := Config{
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
				cfg.Sources = append(cfg.Sources, NewFuncSource(SourceRelay, relay))
			}
		case "router":
			if router != nil {
				cfg.Sources = append(cfg.Sources, NewFuncSource(SourceRouter, router))
				cfg.Router = SourceRouter
			}
		case "https":
			srcs, err := HTTPSources(c.HTTPS, log)
			if err != nil {
				return Config{}, fmt.Errorf("publicip.https: %w", err)
			}
			cfg.Sources = append(cfg.Sources, srcs...)
		case "dns":
			srcs, err := DNSSources(c.DNS)
			if err != nil {
				return Config{}, fmt.Errorf("publicip.dns: %w", err)
			}
			cfg.Sources = append(cfg.Sources, srcs...)
		default:
			return Config{}, fmt.Errorf("publicip.sources: unknown source %q", k)
		}
	}
	return cfg, nil
}
