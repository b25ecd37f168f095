// Command porthole-relay runs the Porthole relay on a VPS: agents connect to it over
// QUIC and viewers reach their cameras through it. See the README.
//
//	porthole-relay -config relay.yaml     run
//	porthole-relay -config relay.yaml -check
//	porthole-relay token                  print a new agent token
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/procs"
	"github.com/porthole-dev/porthole/internal/profiling"
	"github.com/porthole-dev/porthole/relay"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "token" {
		if len(os.Args) > 2 {
			fmt.Fprintln(os.Stderr, "usage: porthole-relay token   (prints a new agent token; takes no arguments)")
			os.Exit(2)
		}
		// The token alone on stdout, so `porthole-relay token > home.token` works.
		fmt.Println(config.NewToken())
		fmt.Fprintln(os.Stderr, "porthole-relay: a new agent token: give the same one to the relay (agents.NAME.token_file) and the agent (relay.token_file), in files only root can read")
		return
	}
	cfgPath := flag.String("config", "/etc/porthole/relay.yaml", "config file")
	check := flag.Bool("check", false, "validate the config, print problems, exit")
	showVersion := flag.Bool("version", false, "print the version and exit")
	verbose := flag.Bool("v", false, "debug logging")
	headroomMiB := flag.Int("gc-headroom", relay.DefaultGCHeadroom>>20, "MiB the heap may grow between garbage collections over what the relay holds; 0: Go's GOGC rule alone")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: porthole-relay [-config relay.yaml] [-check] [-v] [-gc-headroom MiB] | porthole-relay token | -version\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *showVersion {
		fmt.Println("porthole-relay", version)
		return
	}
	rc, err := config.LoadRelay(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, w := range rc.Warnings {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	if *check {
		fmt.Printf("%s: ok (%d agents)\n", *cfgPath, len(rc.Agents))
		return
	}
	if *headroomMiB > 0 && os.Getenv("GOMEMLIMIT") == "" {
		// Idle tunnels would otherwise cost twice their size in RSS (the GC lets
		// the heap grow by as much as is live); see relay.LimitGCHeadroom. GOGC
		// still applies; a GOMEMLIMIT in the environment replaces this.
		relay.LimitGCHeadroom(int64(*headroomMiB) << 20)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := relay.New(relay.Config{Relay: rc, Logger: log})
	if err != nil {
		log.Error("cannot start", "err", err)
		os.Exit(1)
	}
	stopProfile := profiling.Start()
	var wg sync.WaitGroup
	wg.Go(func() { procs.Run(ctx, procs.Config{Logger: log}) })
	err = srv.Run(ctx)
	stop()
	wg.Wait()
	stopProfile()
	if err != nil {
		log.Error("relay failed", "err", err)
		os.Exit(1)
	}
}
