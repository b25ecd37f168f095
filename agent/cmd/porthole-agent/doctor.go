package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/doctor"
	"github.com/porthole-dev/porthole/internal/config"
)

// doctorCmd checks what the agent needs around it and prints one line per
// check; non-zero exit when a problem is found. It reads the whole config
// (the relay token and camera logins are checked).
func doctorCmd(ctx context.Context, args []string, cfgPath string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("porthole-agent doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfgPath, "config", cfgPath, "the agent's config file")
	timeURL := fs.String("time-url", "", "an http(s) URL whose Date header the clock is compared with (default: tls.acme_ca, else publicip.https)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "porthole-agent doctor: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	ac, err := config.LoadAgent(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		fmt.Fprintln(stdout, "problem  config: the config does not load (above); fix it first: porthole-agent -check")
		return 1
	}
	fmt.Fprintf(stdout, "ok       config %s: %d services\n", cfgPath, len(ac.Services))
	cfg := doctor.Config{Agent: ac, TimeURL: *timeURL}
	cfg.Running = func(ctx context.Context) (doctor.AgentView, error) { return runningAgent(ctx, ac) }
	if ac.Relay == nil { // a relayed agent publishes the relay's address, not the home's
		cfg.PublicIP = func(ctx context.Context) (netip.Addr, error) { return agent.DetectPublicIPv4(ctx, ac) }
	}
	rs := doctor.Run(ctx, cfg)
	for _, r := range rs {
		fmt.Fprintln(stdout, r)
	}
	if doctor.Failed(rs) {
		return 1
	}
	return 0
}

// runningAgent is the running agent's view, or an error when none runs. Doctor
// must not mistake a running agent for none: its token check would replace
// the agent's session, and a replaced agent waits before reconnecting. So an
// admin endpoint that answers oddly counts as an agent, and with admin: off a
// fresh status.json in state_dir does.
func runningAgent(ctx context.Context, ac *config.Agent) (doctor.AgentView, error) {
	if ac.Admin != "" {
		st, err := agent.QueryStatus(ctx, nil, ac.Admin, ac.Name)
		if err == nil || !errors.Is(err, agent.ErrNotRunning) {
			return doctor.AgentView{TunnelConnected: err == nil && st.Tunnel.Connected, DNS: st.DNS}, nil
		}
	}
	st, err := agent.ReadStatus(ac.StateDir)
	if err != nil {
		return doctor.AgentView{}, err
	}
	if err := st.Stale(time.Now()); err != nil || st.Once {
		return doctor.AgentView{}, errors.New("no fresh status: no agent runs")
	}
	return doctor.AgentView{TunnelConnected: st.Tunnel.Connected, DNS: st.DNS}, nil
}
