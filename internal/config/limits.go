package config

import "time"

// Limits bound viewer connections: the limits: section of relay.yaml and
// agent.yaml. A zero field means the key is absent and the gateway's default
// applies; -1 in the file means no limit. The defaults (package gateway):
//
//	limits:
//	  max_conns: 4096              # all services of this daemon together
//	  max_conns_per_source: 64     # one viewer address (IPv6: one /64), all services
//	  max_pending_per_source: 4    # connections from one address that sent nothing yet
//	  max_conns_per_service: 1024  # one service; keeps room for the others
//	  first_byte_timeout: 0s       # off: a tcp service's server may speak first
//
// None of them cuts a running video stream: once a byte has moved, a
// connection only counts against the caps.
type Limits struct {
	MaxConns            int
	MaxConnsPerSource   int
	MaxPendingPerSource int
	MaxConnsPerService  int
	// FirstByteTimeout resets a viewer that sends nothing for this long after
	// connecting; 0 = off. The agent's services may set their own.
	FirstByteTimeout time.Duration
}

var limitsKeys = []string{"max_conns", "max_conns_per_source", "max_pending_per_source", "max_conns_per_service", "first_byte_timeout"}

// limits reads the optional limits: section.
func (p *parser) limits(f *fields) Limits {
	var l Limits
	lf := p.section(f, "limits", limitsKeys)
	if lf == nil {
		return l
	}
	l.MaxConns = p.limit(lf, "max_conns")
	l.MaxConnsPerSource = p.limit(lf, "max_conns_per_source")
	l.MaxPendingPerSource = p.limit(lf, "max_pending_per_source")
	l.MaxConnsPerService = p.limit(lf, "max_conns_per_service")
	l.FirstByteTimeout = p.duration(lf, "first_byte_timeout", 0, 0)
	return l
}

// limit reads a connection cap: a positive number, or -1 for none.
func (p *parser) limit(f *fields, key string) int {
	v, line, present, ok := p.integer(f, key)
	if !ok || !present {
		return 0
	}
	if v < 1 && v != -1 {
		p.errorf(line, f.sub(key), "%d is not a limit: at least 1, or -1 for no limit", v)
		return 0
	}
	return v
}
