// Package admin is the small local web server both daemons run on their admin
// address (the admin: key): a status page that reads well on a phone, the same
// status as JSON, Prometheus metrics and a health check. It holds no daemon logic:
// each daemon injects a status function, a page renderer, a health check and a
// metrics gatherer.
//
// Endpoints (GET or HEAD only):
//
//	/             status page: plain server-rendered HTML, no scripts, refreshes every 10 s
//	/status.json  the daemon's status as JSON (what `porthole-agent status` reads)
//	/metrics      Prometheus text format
//	/healthz      200 "ok" while the daemon's loop is alive, 503 and the reason otherwise
//
// The listener has no login, so it belongs on loopback (the default). Every
// request must name the server by an IP address or "localhost" in its Host
// header, which stops a web page from reading it through DNS rebinding. No
// endpoint ever shows a secret (tokens, passwords, keys): the status types
// hold none, and the daemons' tests check every endpoint's body against the
// secrets of their config.
//
// # README draft: "Admin endpoint and status"
//
// Both daemons serve a status page on a local address: the agent on
// 127.0.0.1:7480, the relay on 127.0.0.1:7481. Change it with the admin: key
// (admin: 127.0.0.1:9000), or turn it off with admin: off (an empty admin:
// means the default, like every other optional key). Open
// http://127.0.0.1:7480/ on the machine (or through ssh -L 7480:127.0.0.1:7480)
// to see, per service, whether the relay accepted it, the last connection to the
// camera, viewers now and bytes moved; the tunnel (transport, last error,
// reconnects), the path DNS points at and why, the router's mappings and the DNS
// record. /status.json has the same as JSON, /metrics is for Prometheus,
// /healthz for a container health check (200 while the agent's loop runs).
//
// The page has no login: anyone who can reach the address can read it (never a
// password or token, but the home's public address and the cameras' LAN
// addresses). Keep it on loopback; -check and the start-up log warn when it is
// not. If the default address is taken (a second agent on the same machine), the
// daemon logs a warning and runs without it; an address you set yourself must be
// free, or the daemon does not start.
//
// porthole-agent status asks the running agent at its admin address and prints
// the same status for a terminal. It reads only the admin: and state_dir: keys of
// the config, never a secret file, so any user can run it; if the config can't be
// read it tries the default address. It exits 0 when the agent answered with
// fresh data, 1 when no agent answers ("is porthole-agent running? systemctl
// status porthole-agent") or its data is stale (its loop has not run for longer
// than it should). With admin: off it shows the status the agent last saved in
// state_dir/status.json, and says so.
//
// The relay's old metrics: key still works as another name for admin: (with a
// warning naming its line); rename it when convenient.
package admin
