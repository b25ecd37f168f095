package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/internal/config"
)

// notifyTestCmd sends a test event to each notify: target and prints how
// each went; non-zero exit when one failed. It reads the whole config (the
// targets' URLs and tokens are secrets).
func notifyTestCmd(ctx context.Context, args []string, cfgPath string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("porthole-agent notify-test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfgPath, "config", cfgPath, "the agent's config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ac, err := config.LoadAgent(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if probs := agent.NotifyProblems(ac, cfgPath); len(probs) > 0 {
		for _, p := range probs {
			fmt.Fprintln(stderr, p)
		}
		return 1
	}
	res, err := agent.SendTestNotification(ctx, ac)
	if err != nil {
		fmt.Fprintf(stderr, "porthole-agent notify-test: %s (%s)\n", err, cfgPath)
		return 1
	}
	code := 0
	for _, r := range res {
		if r.Err != nil {
			fmt.Fprintf(stdout, "problem  %s: %s; fix: %s\n", r.Target, r.Err, r.Fix)
			code = 1
			continue
		}
		fmt.Fprintf(stdout, "ok       %s: sent\n", r.Target)
	}
	return code
}
