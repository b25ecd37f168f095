package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

const (
	// maxConfigSize bounds a config file; real ones are a few KiB.
	maxConfigSize = 1 << 20
	// maxSecretSize bounds a *_file secret.
	maxSecretSize = 64 << 10
)

// parser walks one YAML document and collects every problem it finds.
type parser struct {
	file      string
	dir       string // resolves relative *_file paths
	lookupEnv func(string) (string, bool)
	readFile  func(string) ([]byte, error)
	// stat reports a secret file's mode for the permission warning; nil = no check.
	stat func(string) (fs.FileInfo, error)

	errs     Errors
	warnings Errors
	// tlsLine and tlsKey place the warning about services speaking TLS
	// without a certificate source: the first such service (agent only).
	tlsLine int
	tlsKey  string
}

func newParser(file string, lookupEnv func(string) (string, bool)) *parser {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	return &parser{
		file:      file,
		dir:       filepath.Dir(file),
		lookupEnv: lookupEnv,
		readFile:  readSecretFile,
		stat:      os.Stat,
	}
}

// readSecretFile reads a small regular file. Devices and FIFOs are refused
// so a typo can't block the loader or read an endless stream.
func readSecretFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSecretSize {
		return nil, fmt.Errorf("larger than %d bytes", maxSecretSize)
	}
	return b, nil
}

func (p *parser) errorf(line int, key, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) warnf(line int, key, format string, args ...any) {
	p.warnings = append(p.warnings, &Error{File: p.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// warningList returns the warnings sorted by line, formatted as errors are.
func (p *parser) warningList() []string {
	if len(p.warnings) == 0 {
		return nil
	}
	p.warnings.sort()
	out := make([]string, len(p.warnings))
	for i, w := range p.warnings {
		out[i] = w.Error()
	}
	return out
}

// result returns the collected problems sorted by line, or nil.
func (p *parser) result() error {
	if len(p.errs) == 0 {
		return nil
	}
	p.errs.sort()
	return p.errs
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document parses data and returns its root mapping, or nil after recording
// why there is none.
func (p *parser) document(data []byte) (root *yaml.Node) {
	if len(data) > maxConfigSize {
		p.errorf(0, "", "config larger than %d bytes", maxConfigSize)
		return nil
	}
	defer func() {
		// yaml.v3 reports its own errors by panicking internally and
		// recovering; anything that still escapes is a bug in it, and a
		// config loader must not take the program down for it.
		if r := recover(); r != nil {
			p.errorf(0, "", "invalid YAML")
			root = nil
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorf(0, "", "empty config")
			return nil
		}
		p.yamlError(err)
		return nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		p.yamlError(err)
		return nil
	default:
		p.errorf(extra.Line, "", "more than one YAML document (remove the second ---)")
		return nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		p.errorf(0, "", "empty config")
		return nil
	}
	root = resolve(doc.Content[0])
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		p.errorf(0, "", "empty config")
		return nil
	}
	return root
}

func (p *parser) yamlError(err error) {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		p.errorf(line, "", "invalid YAML: %s", m[2])
		return
	}
	p.errorf(0, "", "invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
}

// resolve follows aliases (*name) to the anchored node.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "nothing"
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		}
		return "a string"
	}
	return "an alias"
}

// entry is one key: value pair of a mapping.
type entry struct {
	key, val *yaml.Node
}

// fields is a checked mapping: every key is known and appears once.
type fields struct {
	path string
	line int
	m    map[string]entry
	keys []string // in document order
}

// has reports whether key is present.
func (f *fields) has(key string) bool {
	_, ok := f.m[key]
	return ok
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// sub returns the key path of a child key.
func (f *fields) sub(key string) string { return join(f.path, key) }

// mapping checks that n is a mapping whose keys are all in known and unique.
// It reports problems and returns nil when n is not a mapping at all.
func (p *parser) mapping(n *yaml.Node, path string, known []string) *fields {
	n = resolve(n)
	if n == nil {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, path, "expected a mapping (key: value lines), got %s", kindName(n))
		return nil
	}
	f := &fields{path: path, line: n.Line, m: map[string]entry{}}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errorf(k.Line, path, "keys must be plain strings, got %s", kindName(k))
			continue
		}
		name := k.Value
		if k.ShortTag() == "!!merge" {
			p.errorf(k.Line, path, "merge keys (<<) are not supported")
			continue
		}
		if prev, dup := f.m[name]; dup {
			p.errorf(k.Line, "", "duplicate key %s (first at line %d)", join(path, name), prev.key.Line)
			continue
		}
		if known != nil && !contains(known, name) {
			msg := "unknown key " + join(path, name)
			if s := suggest(name, known); s != "" {
				msg += " (did you mean " + s + "?)"
			}
			p.errorf(k.Line, "", "%s", msg)
			continue
		}
		f.m[name] = entry{key: k, val: v}
		f.keys = append(f.keys, name)
	}
	return f
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest returns the known key closest to name, if within edit distance 2.
func suggest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(name, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64 // not a typo of a config key
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// scalar returns n's value with ${VAR} references expanded. ok is false
// (and the problem recorded) when n is not a scalar or expansion fails.
// A null (key:, ~, null) reads as "".
func (p *parser) scalar(n *yaml.Node, path string) (s string, ok bool) {
	n = resolve(n)
	if n == nil {
		p.errorf(0, path, "missing value")
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		p.errorf(n.Line, path, "expected a single value, got %s", kindName(n))
		return "", false
	}
	switch n.ShortTag() {
	case "!!null":
		return "", true
	case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
	default:
		p.errorf(n.Line, path, "unsupported YAML tag %s", n.Tag)
		return "", false
	}
	v, err := expandEnv(n.Value, p.lookupEnv)
	if err != nil {
		p.errorf(n.Line, path, "%v", err)
		return "", false
	}
	return v, true
}

// str reads an optional string key; def when absent or empty.
func (p *parser) str(f *fields, key, def string) (s string, line int, ok bool) {
	e, present := f.m[key]
	if !present {
		return def, f.line, true
	}
	s, ok = p.scalar(e.val, f.sub(key))
	if s == "" {
		s = def
	}
	return strings.TrimSpace(s), e.val.Line, ok
}

// required reads a string key that must be present and non-empty.
func (p *parser) required(f *fields, key, hint string) (string, int, bool) {
	s, line, ok := p.str(f, key, "")
	if ok && s == "" {
		msg := "required"
		if hint != "" {
			msg += ": " + hint
		}
		p.errorf(line, f.sub(key), "%s", msg)
		return "", line, false
	}
	return s, line, ok
}

// list reads a sequence of scalars. A single scalar counts as a list of one;
// an absent key or null is nil. Lines are per item; ok is false when an item
// could not be read (the problem is recorded).
func (p *parser) list(f *fields, key string) (items []string, lines []int, present, ok bool) {
	e, present := f.m[key]
	if !present {
		return nil, nil, false, true
	}
	n := resolve(e.val)
	path := f.sub(key)
	switch n.Kind {
	case yaml.ScalarNode:
		s, ok := p.scalar(n, path)
		if ok && s != "" {
			return []string{strings.TrimSpace(s)}, []int{n.Line}, true, true
		}
		return nil, nil, true, ok
	case yaml.SequenceNode:
		ok = true
		for i, c := range n.Content {
			c = resolve(c)
			s, itemOK := p.scalar(c, fmt.Sprintf("%s[%d]", path, i))
			if !itemOK {
				ok = false
				continue
			}
			items = append(items, strings.TrimSpace(s))
			lines = append(lines, c.Line)
		}
		return items, lines, true, ok
	}
	p.errorf(n.Line, path, "expected a list, got %s", kindName(n))
	return nil, nil, true, false
}

// boolean reads an optional true/false key.
func (p *parser) boolean(f *fields, key string, def bool) bool {
	e, present := f.m[key]
	if !present {
		return def
	}
	s, ok := p.scalar(e.val, f.sub(key))
	if !ok || s == "" {
		return def
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on":
		return true
	case "false", "no", "off":
		return false
	}
	p.errorf(e.val.Line, f.sub(key), "expected true or false, got %q", s)
	return def
}

// port reads a required port number (1-65535); hint follows "required: "
// when it is missing. ok says a valid port was read.
func (p *parser) port(f *fields, key, hint string) (port uint16, line int, ok bool) {
	v, line, present, ok := p.integer(f, key)
	switch {
	case !ok:
		return 0, line, false
	case !present:
		p.errorf(line, f.sub(key), "required: %s", hint)
	case v < 1 || v > 65535:
		p.errorf(line, f.sub(key), "%d is not a port (1-65535)", v)
	default:
		return uint16(v), line, true
	}
	return 0, line, false
}

// lenientRoot returns the document's root mapping without checking its keys
// (for the Peek functions, which read a few keys of a config); nil after
// recording why there is none.
func (p *parser) lenientRoot(data []byte) *fields {
	root := p.document(data)
	if root == nil {
		return nil
	}
	return p.mapping(root, "", nil)
}

// integer reads an optional integer key.
func (p *parser) integer(f *fields, key string) (v int, line int, present, ok bool) {
	e, present := f.m[key]
	if !present {
		return 0, f.line, false, true
	}
	s, ok := p.scalar(e.val, f.sub(key))
	if !ok {
		return 0, e.val.Line, true, false
	}
	if s == "" {
		return 0, e.val.Line, false, true
	}
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		p.errorf(e.val.Line, f.sub(key), "expected a whole number, got %q", s)
		return 0, e.val.Line, true, false
	}
	return v, e.val.Line, true, true
}

// duration reads an optional Go duration ("90s", "5m") or whole seconds,
// at least least.
func (p *parser) duration(f *fields, key string, def, least time.Duration) time.Duration {
	e, present := f.m[key]
	if !present {
		return def
	}
	s, ok := p.scalar(e.val, f.sub(key))
	s = strings.TrimSpace(s)
	if !ok || s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		secs, err2 := strconv.ParseInt(s, 10, 32)
		if err2 != nil {
			p.errorf(e.val.Line, f.sub(key), "expected a duration like 60s or 5m, got %q", s)
			return def
		}
		d = time.Duration(secs) * time.Second
	}
	if d < least {
		p.errorf(e.val.Line, f.sub(key), "%s is too short: at least %s", d, least)
		return def
	}
	return d
}

// secret reads key or key_file (exactly one may be set). required says
// whether it must be there. The value never appears in a message.
func (p *parser) secret(f *fields, key string, required bool) (val string, line int, ok bool) {
	return p.fromFile(f, key, required, true)
}

// fromFile reads key or key_file like secret. sensitive adds the warnings
// about files (and configs) others can read; a password hash, meant to be
// written into the config, goes without them.
func (p *parser) fromFile(f *fields, key string, required, sensitive bool) (val string, line int, ok bool) {
	fileKey := key + "_file"
	_, hasInline := f.m[key]
	file, hasFile := f.m[fileKey]
	switch {
	case hasInline && hasFile:
		p.errorf(file.key.Line, f.sub(fileKey), "set either %s or %s, not both", key, fileKey)
		return "", file.key.Line, false
	case hasFile:
		path, line, ok := p.str(f, fileKey, "")
		if !ok {
			return "", line, false
		}
		if path == "" {
			p.errorf(line, f.sub(fileKey), "empty path")
			return "", line, false
		}
		if !filepath.IsAbs(path) {
			path = filepath.Join(p.dir, path)
		}
		b, err := p.readFile(path)
		if err != nil {
			p.errorf(line, f.sub(fileKey), "cannot read %s: %s", path, errText(err))
			return "", line, false
		}
		val = strings.TrimSpace(string(b))
		if val == "" {
			p.errorf(line, f.sub(fileKey), "%s is empty", path)
			return "", line, false
		}
		if sensitive {
			p.checkSecretMode(path, line, f.sub(fileKey))
		}
		return val, line, true
	case hasInline:
		val, line, ok := p.str(f, key, "")
		if ok && val == "" && required {
			p.errorf(line, f.sub(key), "empty (set %s or %s)", key, fileKey)
			return "", line, false
		}
		if sensitive && ok && val != "" && !strings.Contains(resolve(f.m[key].val).Value, "${") {
			// Written into the config itself: the config is a secret file now.
			p.checkConfigMode(line, f.sub(key), fileKey)
		}
		return val, line, ok
	}
	if required {
		p.errorf(f.line, f.sub(key), "required: set %s or %s", key, fileKey)
		return "", f.line, false
	}
	return "", f.line, true
}

// checkSecretMode warns when a secret file can be read by anyone but its
// owner: on a shared machine, or through a service that runs as another user,
// the secret is then no longer secret.
func (p *parser) checkSecretMode(path string, line int, key string) {
	if p.stat == nil || runtime.GOOS == "windows" {
		return
	}
	fi, err := p.stat(path)
	if err != nil {
		return // it was just read; a race with a rename is not worth a message
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		p.warnf(line, key, "secret file %s is open to group or others (mode %04o): chmod 600 %s", path, perm, path)
	}
}

// checkConfigMode warns when the config holds a secret written into it and
// others can read the config.
func (p *parser) checkConfigMode(line int, key, fileKey string) {
	if p.stat == nil || runtime.GOOS == "windows" {
		return
	}
	fi, err := p.stat(p.file)
	if err != nil {
		return // parsed from memory, not from a file
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		p.warnf(line, key, "a secret written into %s, which is open to group or others (mode %04o): move it to %s (a file with mode 600), or chmod 600 %s", p.file, perm, fileKey, p.file)
	}
}

// errText is err's message without the path os errors repeat.
func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// token reads a token (key or key_file) and checks its strength.
func (p *parser) token(f *fields, key string) (string, bool) {
	tok, line, ok := p.secret(f, key, true)
	if !ok {
		return "", false
	}
	k := key
	if f.has(key + "_file") {
		k = key + "_file"
	}
	legacy, err := CheckToken(tok)
	if err != nil {
		p.errorf(line, f.sub(k), "%s", err)
		return "", false
	}
	if legacy {
		p.warnf(line, f.sub(k), "an old-style token without a checksum: still accepted, but make a new one with `porthole-relay token` and put it in both relay.yaml and agent.yaml")
	}
	return tok, true
}

// nameRE is the rule for agent and service names.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func (p *parser) checkName(name string, line int, path string) bool {
	if !nameRE.MatchString(name) {
		p.errorf(line, path, "invalid name %q: use 1-63 of a-z 0-9 - _ . starting with a letter or digit", name)
		return false
	}
	return true
}

// hostPort checks a host:port address. listen allows an empty host and port 0.
func (p *parser) hostPort(s string, line int, path string, listen bool) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		p.errorf(line, path, "expected host:port, got %q", s)
		return false
	}
	n, err := strconv.Atoi(port)
	lo := 1
	if listen {
		lo = 0
	}
	if err != nil || n < lo || n > 65535 {
		p.errorf(line, path, "invalid port %q in %q", port, s)
		return false
	}
	if host == "" {
		if listen {
			return true
		}
		p.errorf(line, path, "missing host in %q", s)
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if listen {
		// Listeners bind addresses; a name here would be resolved once at
		// startup, which is rarely what anyone wants.
		p.errorf(line, path, "listen host must be an IP address, got %q", host)
		return false
	}
	if !validHostname(host, false) {
		p.errorf(line, path, "invalid host %q", host)
		return false
	}
	return true
}

// validHostname checks DNS name syntax (LDH labels). fqdn requires at least
// two labels. A trailing dot is allowed.
func validHostname(s string, fqdn bool) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	if fqdn && len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// ip reads an optional IP address key.
func (p *parser) ip(f *fields, key string) netip.Addr {
	s, line, ok := p.str(f, key, "")
	if !ok || s == "" {
		return netip.Addr{}
	}
	a, err := parseIP(s)
	if err != nil {
		p.errorf(line, f.sub(key), "expected an IP address, got %q", s)
		return netip.Addr{}
	}
	return a
}

// prefix parses a CIDR or a bare IP (a /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if pfx.Addr().Is4In6() {
			pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
			if !pfx.IsValid() {
				return netip.Prefix{}, fmt.Errorf("invalid prefix %q", s)
			}
		}
		return pfx.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// httpURL checks an http(s) URL; http:// gets a warning.
func (p *parser) httpURL(s string, line int, path, why string) bool {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		if strings.Contains(s, "@") { // may hold a password: don't echo it
			p.errorf(line, path, "expected an https:// URL")
		} else {
			p.errorf(line, path, "expected an https:// URL, got %q", s)
		}
		return false
	}
	if u.User != nil {
		p.errorf(line, path, "credentials in URLs are not allowed; use the provider's username/password keys")
		return false
	}
	if u.Scheme == "http" {
		p.warnf(line, path, "plain http:// %s", why)
	}
	return true
}
