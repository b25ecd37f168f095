package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/porthole-dev/porthole/internal/gateway/access"
	"github.com/porthole-dev/porthole/internal/gateway/meter"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ServiceKinds are the service kinds of the contract, in its order.
var ServiceKinds = []string{KindTCP, KindHTTP, KindRTSP, KindPortal}

// supportedKinds are the kinds this version handles; the others in
// ServiceKinds are refused as "not supported yet".
var supportedKinds = map[string]bool{KindTCP: true, KindHTTP: true, KindRTSP: true, KindPortal: true}

// loginKinds are the kinds whose viewers log in (viewers, tls; camera_login
// but for portal).
var loginKinds = map[string]bool{KindHTTP: true, KindRTSP: true, KindPortal: true}

// cameraKinds are the kinds with a camera behind them (target, camera_login,
// live_timeout): not portal, the page of the others.
var cameraKinds = map[string]bool{KindTCP: true, KindHTTP: true, KindRTSP: true}

// notYetKeys are service keys of the contract this version refuses.
var notYetKeys []string

// cameraPathKeys are the http service keys naming a camera's MJPEG stream and
// snapshot, served to viewers as /.porthole/mjpeg and /.porthole/snapshot.jpg.
var cameraPathKeys = []string{"mjpeg", "snapshot"}

// streamPathKeys are the rtsp service keys naming the camera's stream and
// sub-stream, served to viewers as /<service> and /<service>/low.
var streamPathKeys = []string{"path", "low_path"}

var (
	viewerKeys      = []string{"password_hash", "password_hash_file", "daily_cap"}
	cameraLoginKeys = []string{"username", "password", "password_file"}
)

// passwdHint says where a viewer's hash comes from.
const passwdHint = "hash a password with `porthole-agent passwd`"

// viewers reads the top-level viewers: mapping of name -> {password_hash}.
// Nil when absent, null or empty. declared are the names written there, broken
// entries too: services check their viewers against them, so a bad hash is
// reported once, not again at each service that names it.
func (p *parser) viewers(f *fields) (out map[string]Viewer, declared []string) {
	e, ok := f.m["viewers"]
	if !ok {
		return nil, nil
	}
	n := resolve(e.val)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil, nil
	}
	vf := p.mapping(n, "viewers", nil)
	if vf == nil {
		return nil, []string{""} // declared, but not readable: reported already
	}
	declared = vf.keys
	out = map[string]Viewer{}
	for _, name := range vf.keys {
		ve := vf.m[name]
		path := vf.sub(name)
		if !p.checkName(name, ve.key.Line, path) {
			continue
		}
		if v := resolve(ve.val); v.Kind == yaml.ScalarNode {
			p.errorf(v.Line, path, "expected {password_hash: \"$argon2id$...\"} (%s), got %s", passwdHint, kindName(v))
			continue
		}
		pf := p.mapping(ve.val, path, viewerKeys)
		if pf == nil {
			continue
		}
		if len(pf.keys) == 0 {
			p.errorf(pf.line, path+".password_hash", "required (%s)", passwdHint)
			continue
		}
		var capBytes int64
		if e, ok := pf.m["daily_cap"]; ok {
			if v, ok := p.scalar(e.val, pf.sub("daily_cap")); ok {
				n, err := meter.ParseSize(v)
				if err != nil {
					p.errorf(e.val.Line, pf.sub("daily_cap"), "%v", err)
				}
				capBytes = n
			}
		}
		hash, line, ok := p.fromFile(pf, "password_hash", true, false)
		if !ok {
			continue
		}
		err := checkPHC(hash)
		if err == nil {
			err = access.CheckHash(hash) // the bounds the agent's login enforces
		}
		if err != nil {
			k := "password_hash"
			if pf.has("password_hash_file") {
				k = "password_hash_file"
			}
			p.errorf(line, pf.sub(k), "not a usable argon2id hash: %v (%s)", err, passwdHint)
			continue
		}
		out[name] = Viewer{PasswordHash: hash, DailyCap: capBytes}
	}
	if len(out) == 0 {
		out = nil
	}
	return out, declared
}

// PHC bounds: a hash below them protects nothing, one above them would let
// a config make every login take gigabytes or minutes.
const (
	phcMinSalt   = 8
	phcMinHash   = 16
	phcMaxMemory = 4 << 20 // KiB: 4 GiB
	phcMaxTime   = 100
	phcMaxLanes  = 255
)

// checkPHC checks that hash is an argon2id PHC string:
// $argon2id$v=19$m=M,t=T,p=P$salt$hash with base64 (raw, standard) salt and
// hash, with messages that say which part is wrong; access.CheckHash then
// applies the bounds the agent's login enforces. It never echoes the hash.
func checkPHC(hash string) error {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" {
		return errors.New("want $argon2id$v=19$m=...,t=...,p=...$salt$hash")
	}
	if parts[1] != "argon2id" {
		return errors.New("not argon2id")
	}
	if parts[2] != "v=19" {
		return errors.New("want version v=19")
	}
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return errors.New("want parameters m=...,t=...,p=...")
	}
	limits := []struct {
		name   string
		lo, hi int
	}{{"m", 8, phcMaxMemory}, {"t", 1, phcMaxTime}, {"p", 1, phcMaxLanes}}
	var m, lanes int
	for i, l := range limits {
		k, v, _ := strings.Cut(params[i], "=")
		n, err := strconv.Atoi(v)
		if k != l.name || err != nil || v != strconv.Itoa(n) {
			return errors.New("want parameters m=...,t=...,p=... (whole numbers)")
		}
		if n < l.lo || n > l.hi {
			return fmt.Errorf("parameter %s=%d out of range %d-%d", l.name, n, l.lo, l.hi)
		}
		switch l.name {
		case "m":
			m = n
		case "p":
			lanes = n
		}
	}
	if m < 8*lanes {
		return fmt.Errorf("memory m=%d below 8 KiB per lane (p=%d)", m, lanes)
	}
	for _, f := range []struct {
		name string
		val  string
		min  int
	}{{"salt", parts[4], phcMinSalt}, {"hash", parts[5], phcMinHash}} {
		b, err := base64.RawStdEncoding.Strict().DecodeString(f.val)
		if err != nil {
			return fmt.Errorf("%s is not unpadded base64", f.name)
		}
		if len(b) < f.min {
			return fmt.Errorf("%s shorter than %d bytes", f.name, f.min)
		}
	}
	return nil
}

// serviceKind reads a service's kind and the keys that go with it.
// viewers are the names declared under viewers:, for services[].viewers.
func (p *parser) serviceKind(sf *fields, s *Service, viewers []string) {
	kind, line, ok := p.str(sf, "kind", KindTCP)
	if !ok {
		return
	}
	kind = strings.ToLower(kind)
	switch {
	case supportedKinds[kind]:
	case slices.Contains(ServiceKinds, kind):
		p.errorf(line, sf.sub("kind"), "kind %s is not supported by this version yet; use %s", kind, supportedList())
		return
	default:
		p.errorf(line, sf.sub("kind"), "unknown kind %q: use %s", kind, supportedList())
		return
	}
	s.Kind = kind
	for _, k := range notYetKeys {
		if e, ok := sf.m[k]; ok {
			p.errorf(e.key.Line, sf.sub(k), "not supported by this version yet")
		}
	}
	for _, k := range cameraPathKeys {
		e, ok := sf.m[k]
		if !ok {
			continue
		}
		if kind != KindHTTP {
			p.errorf(e.key.Line, sf.sub(k), "only http services serve the camera's %s; kind %s passes the camera's bytes as they are", k, kind)
			continue
		}
		v, vline, ok := p.str(sf, k, "")
		switch {
		case !ok:
		case !strings.HasPrefix(v, "/") || strings.ContainsAny(v, " \t\r\n#"):
			p.errorf(vline, sf.sub(k), "want the camera's URL path, e.g. %s", map[string]string{"mjpeg": "/video.mjpg", "snapshot": "/snapshot.jpg"}[k])
		case k == "mjpeg":
			s.MJPEG = v
		default:
			s.Snapshot = v
		}
	}
	p.streamPaths(sf, s)
	if e, ok := sf.m["live_timeout"]; ok && kind != KindHTTP && kind != KindRTSP {
		p.errorf(e.key.Line, sf.sub("live_timeout"), "only http/rtsp services serve live streams to end; kind %s has none", kind)
	}
	if kind == KindHTTP || kind == KindRTSP {
		if v, _, ok := p.str(sf, "live_timeout", ""); ok && strings.EqualFold(strings.TrimSpace(v), "off") {
			s.LiveTimeout = 0
		} else {
			s.LiveTimeout = p.duration(sf, "live_timeout", DefaultLiveTimeout, time.Minute)
		}
	}
	if !loginKinds[kind] {
		for _, k := range []struct{ key, msg string }{
			{"viewers", "only http/rtsp services have logins; kind %s passes the camera's bytes as they are"},
			{"camera_login", "only http/rtsp services log in to the camera; kind %s passes the camera's own login to the viewer"},
			{"tls", "only http/rtsp services speak TLS; kind %s passes the camera's bytes as they are"},
		} {
			if e, ok := sf.m[k.key]; ok {
				p.errorf(e.key.Line, sf.sub(k.key), k.msg, kind)
			}
		}
		return
	}
	if len(viewers) == 0 {
		p.errorf(line, sf.sub("kind"), "kind %s needs viewers: add one under viewers: (%s)", kind, passwdHint)
	} else {
		s.Viewers = p.serviceViewers(sf, viewers)
	}
	if e, ok := sf.m["camera_login"]; ok && !cameraKinds[kind] {
		p.errorf(e.key.Line, sf.sub("camera_login"), "kind %s has no camera to log in to: set camera_login on the camera's own service", kind)
	} else if cf := p.section(sf, "camera_login", cameraLoginKeys); cf != nil {
		c := &CameraLogin{}
		c.Username, _, _ = p.required(cf, "username", "the camera account's name")
		c.Password, _, _ = p.secret(cf, "password", true)
		s.CameraLogin = c
	}
	s.TLS = p.boolean(sf, "tls", true)
	if !s.TLS {
		p.warnf(sf.m["tls"].val.Line, sf.sub("tls"), "off: viewers' passwords and video cross the internet unencrypted; leave tls on")
	}
}

// streamPaths reads an rtsp service's path: (required) and low_path:.
func (p *parser) streamPaths(sf *fields, s *Service) {
	if s.Kind != KindRTSP {
		for _, k := range streamPathKeys {
			if e, ok := sf.m[k]; ok {
				p.errorf(e.key.Line, sf.sub(k), "only rtsp services name the camera's stream path; kind %s serves the camera's own paths", s.Kind)
			}
		}
		return
	}
	for _, k := range streamPathKeys {
		v, line, ok := p.str(sf, k, "")
		switch {
		case !ok:
		case v == "" && k == "path":
			p.errorf(line, sf.sub(k), "required for kind rtsp: the camera's stream path, e.g. /Streaming/Channels/101 (see the camera's manual or its ONVIF stream URI)")
		case v == "":
		case !strings.HasPrefix(v, "/") || strings.ContainsAny(v, " \t\r\n#"):
			p.errorf(line, sf.sub(k), "want the camera's RTSP URL path starting with /, e.g. %s, got %q", map[string]string{"path": "/Streaming/Channels/101", "low_path": "/Streaming/Channels/102"}[k], v)
		case k == "path":
			s.Path = v
		default:
			s.LowPath = v
		}
	}
}

func supportedList() string {
	var out []string
	for _, k := range ServiceKinds {
		if supportedKinds[k] {
			out = append(out, k)
		}
	}
	// Most useful first: the kinds with logins, then tcp.
	slices.SortStableFunc(out, func(a, b string) int { return boolInt(loginKinds[b]) - boolInt(loginKinds[a]) })
	if len(out) > 2 {
		return strings.Join(out[:len(out)-1], ", ") + " or " + out[len(out)-1]
	}
	return strings.Join(out, " or ")
}

// serviceViewers reads services[].viewers: names defined under viewers:.
// Nil = every viewer.
func (p *parser) serviceViewers(sf *fields, viewers []string) []string {
	items, lines, present, ok := p.list(sf, "viewers")
	if !present || !ok {
		return nil
	}
	path := sf.sub("viewers")
	if len(items) == 0 {
		p.errorf(resolve(sf.m["viewers"].val).Line, path, "empty: leave it out to let every viewer watch, or list names from viewers:")
		return nil
	}
	var out []string
	for i, name := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case !slices.Contains(viewers, name):
			p.errorf(lines[i], ipath, "no viewer %q under viewers: (there: %s)", name, strings.Join(slices.Sorted(slices.Values(viewers)), ", "))
		case slices.Contains(out, name):
			p.errorf(lines[i], ipath, "%q listed twice", name)
		default:
			out = append(out, name)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ServiceViewers returns the names of the viewers who may watch s, sorted:
// s.Viewers, or every viewer of a when s.Viewers is nil. Nil for a service
// without logins (tcp).
func (a *Agent) ServiceViewers(s Service) []string {
	if !loginKinds[s.Kind] {
		return nil
	}
	if s.Viewers != nil {
		return slices.Sorted(slices.Values(s.Viewers))
	}
	return sortedKeys(a.Viewers)
}
