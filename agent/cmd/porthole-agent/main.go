// Command porthole-agent runs the Porthole agent on the home LAN. See the README.
//
//	porthole-agent -config agent.yaml          run
//	porthole-agent -config agent.yaml -once    one detect-and-update pass, then exit
//	porthole-agent -config agent.yaml -check   validate the config
//	porthole-agent -config agent.yaml status   what the running agent is doing
//	porthole-agent status -config agent.yaml   the same
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/internal/admin"
	"github.com/porthole-dev/porthole/internal/config"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const defaultConfig = "/etc/porthole/agent.yaml"

func main() {
	if os.Getenv("GOMAXPROCS") == "" {
		// One P: the agent's work is one tunnel connection, a chain of goroutine
		// hand-offs (socket, quic-go or yamux, stream, socket) that on more Ps
		// costs a thread wake-up on another core per hand-off. Issue 7's bench
		// (2 cores): less CPU per GB, more throughput, less added RTT. An
		// operator's GOMAXPROCS wins.
		runtime.GOMAXPROCS(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole program, testable: it runs until ctx ends and returns the
// exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("porthole-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", defaultConfig, "config file")
	check := fs.Bool("check", false, "validate the config, print problems, exit")
	once := fs.Bool("once", false, "detect the public address, update DNS if needed, print what was done, exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	verbose := fs.Bool("v", false, "debug logging")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: porthole-agent [-config agent.yaml] [-check|-once|-v] | -version\n"+
			"       porthole-agent [-config agent.yaml] status [-json] [-addr host:port]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "porthole-agent", version)
		return 0
	}
	if fs.NArg() > 0 {
		// A command never falls through to starting the agent: a typo must not
		// start a second agent next to the running one.
		switch cmd := fs.Arg(0); cmd {
		case "status":
			return statusCmd(fs.Args()[1:], *cfgPath, stdout, stderr)
		default:
			fmt.Fprintf(stderr, "porthole-agent: unknown command %q (commands: status); without a command it runs the agent\n", cmd)
			return 2
		}
	}
	ac, err := config.LoadAgent(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range append(ac.Warnings, agent.ConfigWarnings(ac)...) {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if *check {
		fmt.Fprintf(stdout, "%s: ok (%d services)\n", *cfgPath, len(ac.Services))
		return 0
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	a, err := agent.New(agent.Config{Agent: ac, Logger: log, Version: version})
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if *once {
		if err := a.Once(ctx, stdout); err != nil {
			fmt.Fprintln(stderr, "porthole-agent -once:", err)
			return 1
		}
		return 0
	}
	adm, err := startAdmin(a, ac, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	var wg sync.WaitGroup
	if adm != nil {
		wg.Go(func() {
			if err := adm.Run(ctx); err != nil {
				log.Warn("admin endpoint stopped", "err", err)
			}
		})
	}
	err = a.Run(ctx)
	if adm != nil {
		adm.Close()
	}
	wg.Wait()
	if err != nil {
		log.Error("agent failed", "err", err)
		return 1
	}
	return 0
}

// startAdmin binds the admin endpoint; nil when it is off. When the default
// address is taken (a second agent on this machine) the agent runs without it;
// an address set in the config must be free.
func startAdmin(a *agent.Agent, ac *config.Agent, log *slog.Logger) (*admin.Server, error) {
	if ac.Admin == "" {
		log.Info("admin endpoint off (admin: off); `porthole-agent status` reads " + filepath.Join(ac.StateDir, agent.StatusFile))
		return nil, nil
	}
	cfg := a.AdminConfig()
	cfg.Addr, cfg.Logger = ac.Admin, log.With("part", "admin")
	adm, err := admin.New(cfg)
	if err != nil && ac.AdminDefault {
		log.Warn("admin endpoint not started: its default address is taken (another agent on this machine?); set admin: to a free address, or admin: off",
			"addr", ac.Admin, "err", err)
		return nil, nil
	}
	return adm, err
}

// statusCmd asks the running agent for its status. It reads only the admin:
// and state_dir: keys of the config, so it needs no access to secrets.
func statusCmd(args []string, cfgPath string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("porthole-agent status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfgPath, "config", cfgPath, "the agent's config file (only admin: and state_dir: are read)")
	addr := fs.String("addr", "", "the agent's admin address (default: admin: from the config)")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "porthole-agent status: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	peek, err := config.PeekAgentAdmin(cfgPath)
	if err != nil {
		peek = config.AgentAdmin{Admin: config.DefaultAgentAdmin, StateDir: config.DefaultAgentStateDir}
		if *addr == "" {
			fmt.Fprintf(stderr, "note: %s; trying the default admin address %s\n", firstLine(err), peek.Admin)
		}
	}
	if *addr != "" {
		peek.Admin = *addr
	}
	now := time.Now()
	file := filepath.Join(peek.StateDir, agent.StatusFile)
	var st agent.Status
	saved := peek.Admin == ""
	if saved {
		st, err = agent.ReadStatus(peek.StateDir)
		if err != nil {
			fmt.Fprintf(stderr, "porthole-agent status: the admin endpoint is off (admin: off in %s), and %s\n", cfgPath, err)
			return 1
		}
		fmt.Fprintf(stderr, "the admin endpoint is off (admin: off in %s): showing what the agent last saved in %s\n", cfgPath, file)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err = agent.QueryStatus(ctx, nil, peek.Admin, peek.Name)
		if err != nil {
			fmt.Fprintln(stderr, "porthole-agent status:", err)
			if !errors.Is(err, agent.ErrNotRunning) {
				return 1
			}
			// A -once run (from cron, say) leaves its result in state_dir:
			// that is the status of an agent that never stays running.
			var rerr error
			if st, rerr = agent.ReadStatus(peek.StateDir); rerr != nil || !st.Once {
				return 1
			}
			saved = true
			fmt.Fprintf(stderr, "showing the last -once run's status, saved in %s\n", file)
		}
	}
	if *asJSON {
		b, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintln(stdout, string(b))
	} else {
		agent.PrintStatus(stdout, st, now)
	}
	if err := st.Stale(now); err != nil {
		if saved {
			fmt.Fprintf(stderr, "porthole-agent status: %s is old (%s): is porthole-agent running? systemctl status porthole-agent\n", file, err)
		} else {
			fmt.Fprintln(stderr, "porthole-agent status:", err, "(the agent answers but its loop seems stuck; its log may say why: journalctl -u porthole-agent)")
		}
		return 1
	}
	return 0
}

// firstLine shortens a config error (which may list many problems) to one line.
func firstLine(err error) string {
	s := err.Error()
	for i, c := range s {
		if c == '\n' {
			return s[:i] + " ..."
		}
	}
	return s
}
