package discover

import (
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/porthole-dev/porthole/internal/config"
)

// DefaultFirstPort is the first public port WriteYAML suggests.
const DefaultFirstPort = 10000

// YAMLOptions tune WriteYAML.
type YAMLOptions struct {
	// FirstPort is the first public port suggested; zero means
	// DefaultFirstPort. Ports browsers refuse are skipped.
	FirstPort int
	// Username is the camera login discover was given; it goes into
	// camera_login (the password never does: it goes into a file).
	Username string
}

// WriteYAML writes res as services: entries for agent.yaml, with comments
// saying what was learned and what is left to fill in.
func WriteYAML(w io.Writer, res *Result, opts YAMLOptions) error {
	y := &yamlWriter{w: w, next: opts.FirstPort, user: opts.Username, names: map[string]bool{}}
	if y.next <= 0 {
		y.next = DefaultFirstPort
	}
	y.line("# porthole-agent discover: %d camera(s) answered (probed %s).", len(res.Cameras), comment(strings.Join(res.Probed, ", ")))
	if len(res.Cameras) == 0 {
		y.line("# No camera answered. Is ONVIF on (camera web UI: Network > ONVIF)? Some cameras")
		y.line("# answer only a probe sent to them: try -host 192.168.1.0/24 (your LAN's range).")
		return y.err
	}
	y.line("# Paste under services: in agent.yaml, fill in each TODO, then run porthole-agent -check.")
	y.line("# Ports are suggestions: each must be in the relay's ports: range for this agent.")
	y.line("services:")
	for i := range res.Cameras {
		y.camera(&res.Cameras[i])
	}
	return y.err
}

type yamlWriter struct {
	w     io.Writer
	err   error
	next  int
	user  string
	names map[string]bool
}

func (y *yamlWriter) line(format string, args ...any) {
	if y.err == nil {
		_, y.err = fmt.Fprintf(y.w, format+"\n", args...)
	}
}

func (y *yamlWriter) port() int {
	for config.BrowserBlocked(uint16(y.next)) {
		y.next++
	}
	p := y.next
	y.next++
	return p
}

// name returns a unique service name from base.
func (y *yamlWriter) name(base string) string {
	n := base
	for i := 2; y.names[n]; i++ {
		n = base + "-" + strconv.Itoa(i)
	}
	y.names[n] = true
	return n
}

func (y *yamlWriter) camera(c *Camera) {
	base := ServiceName(c.Name)
	if base == "" {
		base = "camera-" + strings.NewReplacer(".", "-", ":", "-").Replace(c.Host)
	}
	y.line("")
	desc := c.Host
	if c.Name != "" {
		desc += ": " + strconv.Quote(c.Name)
	}
	if c.Hardware != "" {
		desc += " (" + c.Hardware + ")"
	}
	y.line("  # %s", comment(desc))
	if len(c.XAddrs) > 0 {
		y.line("  # ONVIF: %s", comment(c.XAddrs[0]))
	}
	for _, p := range c.Profiles {
		y.line("  # profile %s: %s", comment(profileDesc(p)), comment(p.StreamURI))
	}
	for _, p := range c.Ports {
		y.line("  # %s", comment(portDesc(p)))
	}
	for _, p := range c.Problems {
		y.line("  # NOTE: %s", comment(p))
	}
	// the first two profiles with an RTSP URI: main stream and low stream
	var streams []Profile
	for _, p := range c.Profiles {
		if strings.HasPrefix(strings.ToLower(p.StreamURI), "rtsp://") && len(streams) < 2 {
			streams = append(streams, p)
		}
	}
	name := y.name(base)
	switch {
	case len(streams) > 0:
		target, path := rtspTarget(streams[0].StreamURI)
		y.line("  - name: %s", scalar(name))
		y.line("    kind: rtsp")
		y.line("    target: %s", scalar(target))
		y.line("    path: %s   # from ONVIF GetStreamUri (%s)", scalar(path), comment(profileDesc(streams[0])))
		if len(streams) > 1 {
			if t2, p2 := rtspTarget(streams[1].StreamURI); t2 == target {
				y.line("    low_path: %s   # the second profile (%s): for phones on mobile data", scalar(p2), comment(profileDesc(streams[1])))
			}
		}
		y.common(name, "rtsps://HOST:%d/"+name)
	case c.openPort("rtsp") > 0:
		y.line("  # RTSP answers, but the stream path is unknown: run again with -user and -password-file,")
		y.line("  # or look it up in the camera's manual; then remove the # of these lines.")
		y.line("  # - name: %s", scalar(name))
		y.line("  #   kind: rtsp")
		y.line("  #   target: %s", scalar(hostPort(c.Host, c.openPort("rtsp"))))
		y.line("  #   path: /TODO")
		y.line("  #   port: %d", y.port())
		y.line("  #   allow: [any]")
	}
	web := c.openPort("http")
	snapTarget, snapPath := "", ""
	if u, err := url.Parse(c.SnapshotURI); err == nil && u.Scheme == "http" && u.Host != "" {
		snapTarget = u.Host
		if u.Port() == "" {
			snapTarget = hostPort(u.Hostname(), 80)
		}
		snapPath = u.RequestURI()
	}
	if web == 0 && snapTarget == "" {
		return
	}
	target := snapTarget
	if target == "" {
		target = hostPort(c.Host, web)
	}
	wname := y.name(base + "-web")
	y.line("  - name: %s", scalar(wname))
	y.line("    kind: http             # the camera's web page, behind the viewer login")
	y.line("    target: %s", scalar(target))
	if snapPath != "" {
		y.line("    snapshot: %s   # from ONVIF GetSnapshotUri", scalar(snapPath))
	}
	y.common(wname, "https://HOST:%d/")
}

// common writes the keys every service gets: port, allow, viewers,
// camera_login.
func (y *yamlWriter) common(name, urlFormat string) {
	port := y.port()
	y.line("    port: %d   # the public port (relay and router); viewers open %s", port, fmt.Sprintf(urlFormat, port))
	y.line("    allow: [any]           # TODO: who may connect: CIDRs, or [any] (viewers still log in)")
	y.line("    # viewers: [alice]     # who may watch (default: every viewer)")
	if y.user != "" {
		y.line("    camera_login: {username: %s, password_file: /etc/porthole/%s.pass}   # TODO: write the camera's password there (chmod 600)",
			scalar(y.user), strings.TrimSuffix(name, "-web"))
	} else {
		y.line("    # camera_login: {username: TODO, password_file: /etc/porthole/%s.pass}   # TODO: the camera's own login", strings.TrimSuffix(name, "-web"))
	}
}

func (c *Camera) openPort(proto string) int {
	for _, p := range c.Ports {
		if p.Open && p.Protocol == proto {
			return p.Port
		}
	}
	return 0
}

// rtspTarget splits an RTSP URI into host:port and the path with its query.
func rtspTarget(uri string) (target, path string) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", ""
	}
	target = u.Host
	if u.Port() == "" {
		target = hostPort(u.Hostname(), 554)
	}
	path = u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if u.RawQuery != "" {
		path += "?" + u.RawQuery
	}
	return target, path
}

func hostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

func profileDesc(p Profile) string {
	s := p.Name
	if s == "" {
		s = p.Token
	}
	if p.Encoding != "" {
		s += " " + p.Encoding
	}
	if p.Width > 0 && p.Height > 0 {
		s += fmt.Sprintf(" %dx%d", p.Width, p.Height)
	}
	return s
}

func portDesc(p PortProbe) string {
	proto := strings.ToUpper(p.Protocol)
	if !p.Open {
		return fmt.Sprintf("%s %d: %s", proto, p.Port, p.Error)
	}
	s := fmt.Sprintf("%s %d: %s", proto, p.Port, p.Status)
	if p.Server != "" {
		s += ", Server: " + p.Server
	}
	if p.Auth != "" {
		s += ", login: " + p.Auth
		if p.Realm != "" {
			s += " realm " + strconv.Quote(p.Realm)
		}
	}
	return s
}

// ServiceName makes a service name (a-z 0-9 -, at most 40 characters) from
// a camera's ONVIF name; "" when nothing usable is left.
func ServiceName(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
		} else {
			dash = true
		}
		if b.Len() >= 40 {
			break
		}
	}
	return strings.TrimRight(b.String(), "-")
}

// scalar renders s as a YAML scalar, quoted when it must be.
func scalar(s string) string {
	b, err := yaml.Marshal(s)
	if err != nil {
		return strconv.Quote(s)
	}
	return strings.TrimSuffix(string(b), "\n")
}

// comment makes text from a camera safe inside a YAML comment: one line,
// printable, bounded.
func comment(s string) string {
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
	return clipN(s, 300)
}
