package config

import (
	"testing"
	"time"
)

func TestLimits(t *testing.T) {
	r, err := ParseRelay("r.yaml", []byte(`agents: {home: {token: `+tokB+`, ports: 10554}}
limits:
  max_conns: 10000
  max_conns_per_source: -1
  max_pending_per_source: 8
  max_conns_per_service: 2000
  first_byte_timeout: 15s
`), envOf())
	checkErrs(t, err)
	want := Limits{MaxConns: 10000, MaxConnsPerSource: -1, MaxPendingPerSource: 8, MaxConnsPerService: 2000, FirstByteTimeout: 15 * time.Second}
	if r.Limits != want {
		t.Errorf("relay limits %+v, want %+v", r.Limits, want)
	}

	a, err := ParseAgent("a.yaml", []byte(`name: home
limits: {max_conns_per_source: 16}
services:
  - {name: cam, target: "192.168.1.20:554", port: 10554, allow: [any], first_byte_timeout: 5s}
  - {name: raw, target: "192.168.1.20:9000", port: 10555, allow: [any]}
`), envOf())
	checkErrs(t, err)
	if a.Limits != (Limits{MaxConnsPerSource: 16}) {
		t.Errorf("agent limits %+v", a.Limits)
	}
	if a.Services[0].FirstByteTimeout != 5*time.Second || a.Services[1].FirstByteTimeout != 0 {
		t.Errorf("service first-byte timeouts %v, %v", a.Services[0].FirstByteTimeout, a.Services[1].FirstByteTimeout)
	}

	// Absent or empty: every limit at the gateway's default.
	for _, doc := range []string{"", "limits:\n"} {
		r, err := ParseRelay("r.yaml", []byte("agents: {home: {token: "+tokB+", ports: 10554}}\n"+doc), envOf())
		checkErrs(t, err)
		if r.Limits != (Limits{}) {
			t.Errorf("%q: limits %+v, want zero", doc, r.Limits)
		}
	}
}

func TestLimitsErrors(t *testing.T) {
	_, err := ParseRelay("r.yaml", []byte(`agents: {home: {token: `+tokB+`, ports: 10554}}
limits:
  max_conns: 0
  max_conns_per_source: -5
  max_pending_per_source: many
  first_byte_timeout: soon
  max_conn: 3
`), envOf())
	checkErrs(t, err,
		want{3, "limits.max_conns", "at least 1, or -1 for no limit"},
		want{4, "limits.max_conns_per_source", "at least 1, or -1"},
		want{5, "limits.max_pending_per_source", "expected a whole number"},
		want{6, "limits.first_byte_timeout", "expected a duration"},
		want{7, "", "unknown key limits.max_conn (did you mean max_conns?)"},
	)
	_, err = ParseAgent("a.yaml", []byte(`name: home
limits: [1]
services:
  - {name: cam, target: "192.168.1.20:554", port: 10554, allow: [any], first_byte_timeout: -1s}
`), envOf())
	checkErrs(t, err,
		want{2, "limits", "expected"},
		want{4, "services[0].first_byte_timeout", "too short"},
	)
}
