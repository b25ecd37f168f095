package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/porthole-dev/porthole/agent/wg/invite"
	"github.com/porthole-dev/porthole/internal/config"
)

// inviteCmd invites, lists and revokes phones (WireGuard peers). It reads
// state_dir:, wireguard:, ddns.hostname, viewers: and services: of the
// config (config.PeekAgentWireGuard), no secret file.
func inviteCmd(args []string, cfgPath string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("porthole-agent invite", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfgPath, "config", cfgPath, "the agent's config file")
	viewer := fs.String("viewer", "", "whose phone it is: a name under viewers: (required for a new invite)")
	pngFile := fs.String("png", "", "also write the QR code to this PNG file (mode 0600: it holds the phone's key)")
	light := fs.Bool("light", false, "draw the terminal QR code for a light terminal background")
	list := fs.Bool("list", false, "list the phones")
	revoke := fs.String("revoke", "", "revoke the phone with this name")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: porthole-agent invite [-config agent.yaml] NAME -viewer VIEWER [-png FILE] [-light]   a WireGuard config for phone NAME\n"+
			"       porthole-agent invite [-config agent.yaml] -list\n"+
			"       porthole-agent invite [-config agent.yaml] -revoke NAME\n")
		fs.PrintDefaults()
	}
	names, err := parseNames(fs, args)
	if err != nil {
		return 2
	}
	if countTrue(*list, *revoke != "", len(names) > 0) != 1 || len(names) > 1 || (len(names) == 1) != (*viewer != "") ||
		(*pngFile != "" || *light) && len(names) == 0 {
		fmt.Fprintln(stderr, "porthole-agent invite: give NAME with -viewer VIEWER, or -list, or -revoke NAME")
		fs.Usage()
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "porthole-agent invite:", err)
		return 1
	}
	wc, err := config.PeekAgentWireGuard(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if wc.WireGuard == nil {
		return fail(fmt.Errorf("%s has no wireguard: section; add one, e.g.\n\nwireguard:\n  port: 51820\n  address: 10.77.0.1/24", cfgPath))
	}
	store, err := invite.New(invite.Config{StateDir: wc.StateDir, Address: wc.WireGuard.Address})
	if err != nil {
		return fail(err)
	}
	switch {
	case *list:
		peers, err := store.List()
		if err != nil {
			return fail(err)
		}
		if len(peers) == 0 {
			fmt.Fprintf(stdout, "no phones in %s/%s\n", wc.StateDir, invite.PeersFile)
			return 0
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PHONE\tVIEWER\tADDRESS\tCREATED\tPUBLIC KEY")
		for _, p := range peers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Name, p.Viewer, p.Address, p.Created.Local().Format("2006-01-02 15:04"), p.PublicKey)
		}
		tw.Flush()
		return 0
	case *revoke != "":
		p, err := store.Revoke(*revoke)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "phone %s (viewer %s, %s) revoked; a running agent drops its key within a second, and its config no longer connects\n",
			p.Name, p.Viewer, p.Address)
		return 0
	}
	name := names[0]
	if !slices.Contains(wc.Viewers, *viewer) {
		known := strings.Join(wc.Viewers, ", ")
		if known == "" {
			known = "none"
		}
		return fail(fmt.Errorf("no viewer %q in the viewers: of %s (viewers: %s); every phone belongs to a viewer, add one with porthole-agent passwd", *viewer, cfgPath, known))
	}
	if wc.Endpoint == "" {
		return fail(errors.New("no endpoint for phones: set ddns.hostname or wireguard.endpoint"))
	}
	agentKey, err := store.PublicKey()
	if err != nil {
		return fail(err)
	}
	lan, unroutable := lanAddresses(wc)
	p, priv, err := store.Add(name, *viewer)
	if err != nil {
		return fail(err)
	}
	phone := invite.Phone{Name: name, PrivateKey: priv, Address: p.Address, AgentKey: agentKey, Endpoint: wc.Endpoint,
		AllowedIPs: invite.AllowedIPs(wc.WireGuard.Address, lan)}
	text := phone.Config()
	qr, err := invite.QRTerminal(text, *light)
	if err != nil {
		return fail(err)
	}
	if *pngFile != "" {
		b, err := invite.QRPNG(text, 768)
		if err == nil {
			err = writePrivate(*pngFile, b)
		}
		if err != nil {
			// The phone is recorded, but its key is only in this process: undo.
			store.Revoke(name)
			return fail(fmt.Errorf("%w (the invite was not kept; try again)", err))
		}
	}
	fmt.Fprintf(stdout, "%s\n%s\n", text, qr)
	fmt.Fprintf(stdout, "Phone %s (viewer %s) gets %s in the tunnel. Scan the QR code with the WireGuard app (+, Scan from QR code)", name, *viewer, p.Address)
	if *pngFile != "" {
		fmt.Fprintf(stdout, ", or import %s", *pngFile)
	}
	fmt.Fprintf(stdout, ".\nThe private key above is shown only now and stored nowhere: whoever has this config is %s's phone.\n", *viewer)
	fmt.Fprintf(stdout, "Inside the tunnel, plain (WireGuard encrypts) and without a login (the phone's key says it is %s):\n", *viewer)
	agentAddr := wc.WireGuard.Address.Addr()
	for _, s := range wc.Services {
		if s.Port == 0 {
			continue
		}
		hp := net.JoinHostPort(agentAddr.String(), fmt.Sprint(s.Port))
		switch s.Kind {
		case config.KindHTTP, config.KindPortal:
			fmt.Fprintf(stdout, "  http://%s/   (%s)\n", hp, s.Name)
		case config.KindRTSP:
			fmt.Fprintf(stdout, "  rtsp://%s/%s   (%s)\n", hp, s.Name, s.Name)
		default:
			fmt.Fprintf(stdout, "  %s   (%s, tcp)\n", hp, s.Name)
		}
	}
	if wc.WireGuard.LANAddresses {
		for _, s := range wc.Services {
			if s.Target != "" && !slices.Contains(unroutable, s.Target) {
				fmt.Fprintf(stdout, "  %s   (%s, the camera's own LAN address)\n", s.Target, s.Name)
			}
		}
		for _, t := range unroutable {
			fmt.Fprintf(stdout, "  note: target %s is a name, not an address: the phone can't route to it (use the tunnel address above)\n", t)
		}
	}
	fmt.Fprintf(stdout, "Revoke it with: porthole-agent invite -revoke %s\n", name)
	return 0
}

// lanAddresses are the services' target addresses for AllowedIPs when
// lan_addresses is on; targets given as names can't be routed and are
// returned apart.
func lanAddresses(wc config.AgentWireGuard) (addrs []netip.Addr, names []string) {
	if !wc.WireGuard.LANAddresses {
		return nil, nil
	}
	for _, s := range wc.Services {
		host, _, err := net.SplitHostPort(s.Target)
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(host); err == nil {
			addrs = append(addrs, a.Unmap())
		} else {
			names = append(names, s.Target)
		}
	}
	return addrs, names
}

// writePrivate writes a new file readable by its owner only; it refuses to
// replace an existing one.
func writePrivate(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
