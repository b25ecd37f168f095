package relay

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// collector exports the relay's state to Prometheus at scrape time, reading the
// counters the sessions and listeners keep anyway (nothing on the data path).
type collector struct{ s *Server }

var (
	descAgents                      = prometheus.NewDesc("porthole_relay_agents_connected", "Agents with an authenticated tunnel.", nil, nil)
	descActive                      = prometheus.NewDesc("porthole_relay_viewer_connections_active", "Viewer connections being relayed.", []string{"agent", "service"}, nil)
	descTotal                       = prometheus.NewDesc("porthole_relay_viewer_connections_total", "Viewer connections accepted by the service listener.", []string{"agent", "service"}, nil)
	descDenied                      = prometheus.NewDesc("porthole_relay_viewer_connections_denied_total", "Viewer connections refused by the allow rule.", []string{"agent", "service"}, nil)
	descBytes                       = prometheus.NewDesc("porthole_relay_bytes_total", "Bytes relayed by finished viewer connections.", []string{"agent", "service", "direction"}, nil)
	allMetrics                      = []*prometheus.Desc{descAgents, descActive, descTotal, descDenied, descBytes}
	_          prometheus.Collector = collector{}
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allMetrics {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	sessions := make([]*session, 0, len(c.s.sessions))
	for _, ss := range c.s.sessions {
		sessions = append(sessions, ss)
	}
	c.s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descAgents, prometheus.GaugeValue, float64(len(sessions)))
	for _, ss := range sessions {
		ss.mu.Lock()
		for _, l := range ss.listeners {
			st := l.ln.Stats()
			labels := []string{ss.name, l.spec.Name}
			ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(st.Active), labels...)
			ch <- prometheus.MustNewConstMetric(descTotal, prometheus.CounterValue, float64(st.Total), labels...)
			ch <- prometheus.MustNewConstMetric(descDenied, prometheus.CounterValue, float64(st.Denied), labels...)
			ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.BytesIn), ss.name, l.spec.Name, "in")
			ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.BytesOut), ss.name, l.spec.Name, "out")
		}
		ss.mu.Unlock()
	}
}

// serveMetrics serves /metrics on addr until ctx ends.
func (s *Server) serveMetrics(ctx context.Context, ln net.Listener) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{s})
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// MetricsAddr is the bound metrics address, or nil when metrics are off.
func (s *Server) MetricsAddr() net.Addr {
	if s.mln == nil {
		return nil
	}
	return s.mln.Addr()
}
