// Command agentry-server is agentry's job service: it serves the
// agent-facing side of the Azure Pipelines protocol and agentry's job API
// (serve), and is also the command-line client of that API (pool, job).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentry-server:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	c := &cli{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	cmd := c.command()
	cmd.SetArgs(args)
	return cmd.ExecuteContext(ctx)
}
