package config

import (
	"crypto/tls"
	"crypto/x509"
	"net/mail"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
)

// TXTProviders are the ddns provider types that can write the TXT records of
// ACME's dns-01 challenge; tls.challenge auto picks dns-01 with them.
// DuckDNS can hold one TXT record, but agent/ddns doesn't write it for ACME
// yet, so it gets tls-alpn-01.
var TXTProviders = []string{"cloudflare", "rfc2136"}

// ACMEChallenges are the values of tls.challenge.
var ACMEChallenges = []string{"auto", ChallengeDNS01, ChallengeTLSALPN01}

var tlsKeys = []string{"acme_email", "acme_ca", "acme_ca_root", "cert_file", "key_file", "challenge"}

// tlsSection reads the top-level tls: section. a is the agent parsed so far
// (services and ddns); ddnsListed says a ddns: section was written, so a
// missing a.DDNS is an error reported already.
func (p *parser) tlsSection(f *fields, a *Agent, ddnsListed bool) *TLS {
	t := &TLS{}
	email, emailLine, ok := p.str(f, "acme_email", "")
	if ok && email != "" {
		if addr, err := mail.ParseAddress(email); err != nil || addr.Address != email || addr.Name != "" {
			p.errorf(emailLine, f.sub("acme_email"), "expected an email address such as me@example.com, got %q", email)
		} else {
			t.ACMEEmail = email
		}
	}
	certFile, certLine, _ := p.str(f, "cert_file", "")
	keyFile, keyLine, _ := p.str(f, "key_file", "")
	switch {
	case email != "" && (certFile != "" || keyFile != ""):
		k, line := "cert_file", certLine
		if certFile == "" {
			k, line = "key_file", keyLine
		}
		p.errorf(line, f.sub(k), "set either acme_email (ACME) or cert_file and key_file, not both")
	case certFile != "" && keyFile == "":
		p.errorf(certLine, f.sub("key_file"), "required with cert_file: the certificate's private key (PEM)")
	case keyFile != "" && certFile == "":
		p.errorf(keyLine, f.sub("cert_file"), "required with key_file: the certificate chain (PEM)")
	case certFile != "":
		p.keyPair(f, t, certFile, certLine, keyFile, keyLine)
	}

	if email == "" {
		for _, k := range []string{"acme_ca", "acme_ca_root", "challenge"} {
			if e, ok := f.m[k]; ok {
				p.errorf(e.key.Line, f.sub(k), "needs acme_email: ACME is on only when acme_email is set")
			}
		}
		return t
	}
	if a.DDNS == nil && !ddnsListed {
		p.errorf(emailLine, f.sub("acme_email"), "ACME needs ddns.hostname: the certificate is for that name")
	}
	t.ACMECA = DefaultACMECA
	if u, line, ok := p.str(f, "acme_ca", ""); ok && u != "" {
		if pu, err := url.Parse(u); err != nil || pu.Scheme != "https" || pu.Host == "" || pu.User != nil {
			p.errorf(line, f.sub("acme_ca"), "expected the ACME server's https:// directory URL (ACME is https only), got %q", redactURL(u))
		} else {
			t.ACMECA = u
		}
	}
	if path, line, ok := p.str(f, "acme_ca_root", ""); ok && path != "" {
		path = p.abs(path)
		b, err := p.readFile(path)
		switch {
		case err != nil:
			p.errorf(line, f.sub("acme_ca_root"), "cannot read %s: %s", path, errText(err))
		case !x509.NewCertPool().AppendCertsFromPEM(b):
			p.errorf(line, f.sub("acme_ca_root"), "%s holds no PEM certificate", path)
		default:
			t.ACMECARoot = path
		}
	}
	t.Challenge = p.challenge(f, a, emailLine)
	return t
}

// challenge resolves tls.challenge (auto by default).
func (p *parser) challenge(f *fields, a *Agent, emailLine int) string {
	ch, line, ok := p.str(f, "challenge", "auto")
	if !ok {
		return ""
	}
	ch = strings.ToLower(ch)
	txt := a.DDNS != nil && slices.Contains(TXTProviders, a.DDNS.Provider.Type)
	why := ChallengeTLSALPN01
	switch ch {
	case "auto":
		if txt {
			return ChallengeDNS01
		}
		if !f.has("challenge") {
			line = emailLine
		}
		why = "auto picks tls-alpn-01 (no ddns provider that can write TXT records)"
		if a.DDNS != nil {
			why = "auto picks tls-alpn-01 (ddns provider " + a.DDNS.Provider.Type + " can't write TXT records)"
		}
		ch = ChallengeTLSALPN01
	case ChallengeDNS01:
		if !txt && a.DDNS != nil {
			p.errorf(line, f.sub("challenge"), "dns-01 needs a ddns provider that can write TXT records (%s); use tls-alpn-01 or auto", strings.Join(TXTProviders, ", "))
			return ""
		}
		return ch
	case ChallengeTLSALPN01:
	default:
		p.errorf(line, f.sub("challenge"), "unknown challenge %q: use %s", ch, strings.Join(ACMEChallenges, ", "))
		return ""
	}
	if !slices.ContainsFunc(a.Services, func(s Service) bool { return s.Port == 443 }) {
		p.warnf(line, f.sub("challenge"), "%s: the ACME server must reach this agent on public port 443, and no service uses port 443: "+
			"certificates will fail; use a ddns provider that can write TXT records (%s) for dns-01, a service on port 443, or cert_file/key_file",
			why, strings.Join(TXTProviders, ", "))
	}
	return ch
}

// keyPair checks that cert_file and key_file load as a certificate and its key.
func (p *parser) keyPair(f *fields, t *TLS, certFile string, certLine int, keyFile string, keyLine int) {
	certFile, keyFile = p.abs(certFile), p.abs(keyFile)
	certPEM, err := p.readFile(certFile)
	if err != nil {
		p.errorf(certLine, f.sub("cert_file"), "cannot read %s: %s", certFile, errText(err))
		return
	}
	keyPEM, err := p.readFile(keyFile)
	if err != nil {
		p.errorf(keyLine, f.sub("key_file"), "cannot read %s: %s", keyFile, errText(err))
		return
	}
	p.checkSecretMode(keyFile, keyLine, f.sub("key_file"))
	// The error texts of X509KeyPair name the problem, never the key's bytes.
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		p.errorf(certLine, f.sub("cert_file"), "%s and %s don't load as a certificate and its key: %s",
			certFile, keyFile, strings.TrimPrefix(err.Error(), "tls: "))
		return
	}
	t.CertFile, t.KeyFile = certFile, keyFile
}

// abs joins a relative path to the config file's directory, as *_file keys are.
func (p *parser) abs(path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(p.dir, path)
}

// redactURL drops a URL's user info, which may hold a password.
func redactURL(s string) string {
	if strings.Contains(s, "@") {
		return "(a URL with @ left out)"
	}
	return s
}

// tlsWarning warns once when services speak TLS with no certificate source.
func (p *parser) tlsWarning(a *Agent, line int, key string) {
	if line == 0 || a.TLS != nil && (a.TLS.ACMEEmail != "" || a.TLS.CertFile != "") {
		return
	}
	p.warnf(line, key, "no certificate: set tls: acme_email (Let's Encrypt) or tls: cert_file and key_file; "+
		"until then viewers get a self-signed certificate their browser warns about")
}
