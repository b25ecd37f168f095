// Command porthole-agent runs the Porthole agent on the home LAN. See the README.
//
//	porthole-agent -config agent.yaml          run
//	porthole-agent -config agent.yaml -once    one detect-and-update pass, then exit
//	porthole-agent -config agent.yaml -check   validate the config
//	porthole-agent -config agent.yaml status   what the running agent is doing
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/internal/config"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	cfgPath := flag.String("config", "/etc/porthole/agent.yaml", "config file")
	check := flag.Bool("check", false, "validate the config, print problems, exit")
	once := flag.Bool("once", false, "detect the public address, update DNS if needed, print what was done, exit")
	showVersion := flag.Bool("version", false, "print the version and exit")
	verbose := flag.Bool("v", false, "debug logging")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: porthole-agent [-config agent.yaml] [-check|-once|-v] [status] | -version\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *showVersion {
		fmt.Println("porthole-agent", version)
		return
	}
	ac, err := config.LoadAgent(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, w := range append(ac.Warnings, agent.ConfigWarnings(ac)...) {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	if *check {
		fmt.Printf("%s: ok (%d services)\n", *cfgPath, len(ac.Services))
		return
	}
	if flag.Arg(0) == "status" {
		st, err := agent.ReadStatus(ac.StateDir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		agent.PrintStatus(os.Stdout, st)
		return
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := agent.New(agent.Config{Agent: ac, Logger: log, Version: version})
	if err != nil {
		log.Error("cannot start", "err", err)
		os.Exit(1)
	}
	if *once {
		if err := a.Once(ctx, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "porthole-agent -once:", err)
			os.Exit(1)
		}
		return
	}
	if err := a.Run(ctx); err != nil {
		log.Error("agent failed", "err", err)
		os.Exit(1)
	}
}
