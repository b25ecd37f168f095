package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/porthole-dev/porthole/agent/certs"
	"github.com/porthole-dev/porthole/agent/ddns"
	"github.com/porthole-dev/porthole/agent/notify"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/internal/gateway/access"
	"github.com/porthole-dev/porthole/internal/gateway/httpgw"
	"github.com/porthole-dev/porthole/internal/gateway/meter"
	"github.com/porthole-dev/porthole/internal/gateway/portal"
	"github.com/porthole-dev/porthole/internal/gateway/rtspgw"
)

// web holds what the agent's logged-in services (http, rtsp) share: the
// viewers and their sessions, the certificate, the audit log, and one handler
// per service (the direct listener and the relayed viewers of a service use
// the same one, so a session is good on both paths, and an rtsp camera
// session is shared by the viewers of both). Nil when no service has logins.
type web struct {
	store    *access.Store
	certs    *certs.Manager // nil when no service has tls on
	audit    *slog.Logger
	auditOut io.Closer
	handlers map[string]serviceHandler // by service name: http, rtsp and portal
	meter    *meter.Meter              // bytes per viewer, daily caps
	log      *slog.Logger
	saveErr  atomic.Bool // the last meter.Save failed (logged once)
}

// serviceHandler is the handler of a logged-in service: httpgw's or rtspgw's.
type serviceHandler interface {
	gateway.Handler
	Close() error
}

var (
	_ serviceHandler = (*httpgw.Handler)(nil)
	_ serviceHandler = (*rtspgw.Handler)(nil)
)

// loginKind reports whether services of kind have viewer logins and a
// handler of their own in web.
func loginKind(kind string) bool {
	return kind == config.KindHTTP || kind == config.KindRTSP || kind == config.KindPortal
}

// AuditFile is the audit log in state_dir: one JSON object per line (logins,
// failures, lockouts, who opened which service when, and bytes sent to them).
const AuditFile = "audit.log"

// newWeb builds the shared parts of the http, rtsp and portal services of
// ac; nil when there are none. dial reaches the cameras (the phone page's
// viewers reach an http service's camera too, so its handler dials the LAN,
// not the viewer's path). n gets the lockout and certificate failure events.
func newWeb(ac *config.Agent, log *slog.Logger, opts ddns.ProviderOptions, dial dialFunc, n *notify.Notifier) (*web, error) {
	var logins, tls bool
	for _, s := range ac.Services {
		if loginKind(s.Kind) {
			logins = true
			tls = tls || s.TLS
		}
	}
	if !logins {
		return nil, nil
	}
	if err := os.MkdirAll(ac.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: state_dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(ac.StateDir, AuditFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("agent: audit log: %w", err)
	}
	w := &web{audit: slog.New(slog.NewJSONHandler(f, nil)), auditOut: f, handlers: map[string]serviceHandler{}, log: log}
	fail := func(err error) (*web, error) {
		w.close()
		return nil, err
	}
	viewers := make(map[string]string, len(ac.Viewers))
	caps := map[string]int64{}
	for name, v := range ac.Viewers {
		viewers[name] = v.PasswordHash
		if v.DailyCap > 0 {
			caps[name] = v.DailyCap
		}
	}
	if w.meter, err = meter.New(meter.Config{StateDir: ac.StateDir, Caps: caps, Audit: w.audit, Logger: log.With("part", "viewers")}); err != nil {
		return fail(fmt.Errorf("agent: %w", err))
	}
	w.store, err = access.New(access.Config{Viewers: viewers, StateDir: ac.StateDir,
		Logger: log.With("part", "viewers"), Audit: w.audit,
		OnLockout: func(l access.Lockout) { n.Notify(lockoutEvent(l)) }})
	if err != nil {
		return fail(fmt.Errorf("agent: viewers: %w", err))
	}
	if tls {
		if w.certs, err = newCerts(ac, log.With("part", "certs"), opts, n); err != nil {
			return fail(err)
		}
	}
	for _, s := range ac.Services {
		var login *gateway.Credentials
		if s.CameraLogin != nil {
			login = &gateway.Credentials{Username: s.CameraLogin.Username, Password: s.CameraLogin.Password}
		}
		var h serviceHandler
		var err error
		switch s.Kind {
		case config.KindHTTP:
			target := s.Target
			h, err = httpgw.New(httpgw.Config{
				Service: s.Name, Target: s.Target, Auth: w.store, Viewers: s.Viewers, CameraLogin: login,
				PlainHTTP: !s.TLS, MJPEGPath: s.MJPEG, SnapshotPath: s.Snapshot, Logger: log.With("part", "http", "service", s.Name), Audit: w.audit,
				Meter: w.meter, LiveTimeout: s.LiveTimeout,
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) { return dial(ctx, network, target) },
			})
		case config.KindRTSP:
			h, err = rtspgw.New(rtspgw.Config{
				Service: s.Name, Target: s.Target, Path: s.Path, LowPath: s.LowPath, CameraLogin: login,
				Auth: w.store, Viewers: s.Viewers, DialContext: dial,
				Logger: log.With("part", "rtsp"), Audit: w.audit, Meter: w.meter, LiveTimeout: s.LiveTimeout,
			})
		default:
			continue
		}
		if err != nil {
			return fail(fmt.Errorf("agent: service %s: %w", s.Name, err))
		}
		w.handlers[s.Name] = h
	}
	for _, s := range ac.Services {
		if s.Kind != config.KindPortal {
			continue
		}
		p, err := portal.New(portal.Config{Cameras: w.portalCameras(ac), Meter: w.meter})
		if err != nil {
			return fail(fmt.Errorf("agent: service %s: %w", s.Name, err))
		}
		h, err := httpgw.New(httpgw.Config{Service: s.Name, Site: p, Auth: w.store, Viewers: s.Viewers, PlainHTTP: !s.TLS,
			Meter: w.meter, Logger: log.With("part", "portal", "service", s.Name), Audit: w.audit})
		if err != nil {
			return fail(fmt.Errorf("agent: service %s: %w", s.Name, err))
		}
		w.handlers[s.Name] = h
	}
	return w, nil
}

// portalCameras are the tiles of the phone page: the http services with a
// snapshot or MJPEG stream, and the rtsp services (a link for camera apps),
// in config order.
func (w *web) portalCameras(ac *config.Agent) []portal.Camera {
	var out []portal.Camera
	for _, s := range ac.Services {
		switch s.Kind {
		case config.KindHTTP:
			if s.MJPEG != "" || s.Snapshot != "" {
				out = append(out, portal.Camera{Name: s.Name, Live: w.handlers[s.Name].(*httpgw.Handler)})
			}
		case config.KindRTSP:
			out = append(out, portal.Camera{Name: s.Name, RTSPPort: s.Port, RTSPPlain: !s.TLS, Viewers: ac.ServiceViewers(s)})
		}
	}
	return out
}

// saveUsage writes the viewers' daily figures to state_dir; a failure is
// logged once until a save works again.
func (w *web) saveUsage() {
	err := w.meter.Save()
	switch {
	case err != nil && !w.saveErr.Swap(true):
		w.log.Warn("cannot save the viewers' daily data figures: a restart will start today's caps afresh; check state_dir", "err", err)
	case err == nil:
		w.saveErr.Store(false)
	}
}

// newCerts is the certificate manager the tls: section asks for: ACME
// (DNS-01 through the ddns provider where it can write TXT records, else
// TLS-ALPN-01), the user's cert_file/key_file, or a self-signed certificate.
func newCerts(ac *config.Agent, log *slog.Logger, opts ddns.ProviderOptions, n *notify.Notifier) (*certs.Manager, error) {
	cc := certs.Config{StateDir: ac.StateDir, Logger: log}
	if ac.DDNS != nil {
		cc.Hostnames = []string{ac.DDNS.Hostname}
	}
	cc.OnFailure = func(err error) { n.Notify(certEvent(cc.Hostnames, err)) }
	if t := ac.TLS; t != nil {
		cc.Email, cc.CA, cc.CARootFile = t.ACMEEmail, t.ACMECA, t.ACMECARoot
		cc.CertFile, cc.KeyFile = t.CertFile, t.KeyFile
		switch t.Challenge {
		case config.ChallengeDNS01:
			p, err := ddns.NewACMEDNSProvider(ddnsProviderConfig(ac.DDNS.Provider), opts)
			if err != nil {
				return nil, fmt.Errorf("agent: tls: dns-01: %w", err)
			}
			cc.DNS = p
			// rfc2136 names the zone's primary server: it answers for the
			// zone (its SOA, the TXT record) even where the system's
			// resolver does not see the zone (LAN-only, split horizon).
			if ac.DDNS.Provider.Type == "rfc2136" && ac.DDNS.Provider.Server != "" {
				cc.DNSResolvers = []string{ac.DDNS.Provider.Server}
			}
		case config.ChallengeTLSALPN01:
			// The CA connects to port 443 of the hostname. A service on
			// public port 443 answers it; otherwise certmagic would try to
			// bind 443 itself, so point it at the first TLS service's port
			// (http or rtsp: the gateway answers the challenge before the
			// handler), whose listener answers it (the relay forwards that
			// port too).
			for _, s := range ac.Services {
				if loginKind(s.Kind) && s.TLS {
					cc.AltTLSALPNPort = int(s.Port)
					break
				}
			}
		}
	}
	m, err := certs.New(cc)
	if err != nil {
		return nil, fmt.Errorf("agent: tls: %w", err)
	}
	return m, nil
}

// gatewayConfig adds what service s's kind needs to cfg: for http and rtsp,
// the handler with the viewer login, TLS (https, rtsps), the redirect of
// plain requests (to https:// or rtsps://) and the handshake deadline.
func (w *web) gatewayConfig(s config.Service, cfg *gateway.Config) {
	h := w.handlers[s.Name]
	if h == nil {
		return
	}
	cfg.Handler = h
	if cfg.FirstByteTimeout == 0 {
		cfg.FirstByteTimeout = gateway.DefaultHandshakeTimeout
	}
	if s.TLS && w.certs != nil {
		cfg.TLS = w.certs.TLSConfig()
		cfg.Plain = gateway.RedirectHTTPS
		if s.Kind == config.KindRTSP {
			cfg.Plain = gateway.RedirectRTSPS
		}
	}
}

// closeHandlers ends the handlers' viewer connections (streams, WebSockets,
// RTSP sessions) and camera sessions at shutdown.
func (w *web) closeHandlers() {
	for _, h := range w.handlers {
		h.Close()
	}
}

// close ends the handlers, saves the daily figures and closes the audit log.
func (w *web) close() {
	w.closeHandlers()
	if w.meter != nil {
		w.saveUsage()
	}
	if w.auditOut != nil {
		w.auditOut.Close()
	}
}
