package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/monitor"
	"github.com/olio-dev/olio/router"
	"github.com/olio-dev/olio/router/demo"
	"github.com/olio-dev/olio/router/process"
)

// routerCommand is the hidden subcommand the master runs once per worker: fd 3 is its end
// of the descend socketpair, fd 4 the shared public listener.
func routerCommand() *cli.Command {
	return &cli.Command{
		Name:   "router",
		Hidden: true,
		Usage:  "run one worker's router (started by olio serve, not by hand)",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "index"},
			&cli.StringFlag{Name: "log-format", Value: "text"},
		},
		Action: func(c *cli.Context) error {
			surviveClosedOutput()
			if !c.IsSet("index") {
				return errors.New("--index is not set; the router is run by olio serve, not by hand")
			}
			logger, err := newLogger(c.String("log-format"), os.Stderr)
			if err != nil {
				return err
			}
			ctlFile, err := inherit(3, "descend")
			if err != nil {
				return fmt.Errorf("router: %w; it is run by olio serve, not by hand", err)
			}
			lnFile, err := inherit(4, "listener")
			if err != nil {
				return fmt.Errorf("router: %w; it is run by olio serve, not by hand", err)
			}
			ctl, err := descend.FileConn(ctlFile)
			if err != nil {
				return fmt.Errorf("router: started without its descriptors (it is run by olio serve): %w", err)
			}
			// The master decides the order of shutdown: TERM means a graceful stop; a
			// terminal's Ctrl-C reaches the master alone (we are in our own group).
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
			defer stop()
			// Caught and dropped, not signal.Ignore'd: an ignored signal stays ignored across
			// exec, and the app must start with every signal at its default.
			signal.Notify(make(chan os.Signal, 1), syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGWINCH, syscall.SIGUSR1, syscall.SIGUSR2)
			err = process.Run(ctx, c.Int("index"), ctl, lnFile, logger)
			if err == nil || errors.Is(err, context.Canceled) {
				return nil
			}
			// Said in the log, where the master's own lines are, with the worker: the
			// master sees no more than the exit status.
			logger.Error("router exiting: "+err.Error(), "worker", c.Int("index"))
			return loggedError{err}
		},
	}
}

// loggedError is an error the command has logged already: main exits 1 without a line.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

// demoCommand serves the built-in demo app on $PORT.
func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "serve the built-in demo app on 127.0.0.1:$PORT (olio serve runs it when no app is given)",
		Action: func(c *cli.Context) error {
			if os.Getenv(process.EnvEmbedded) != "" { // olio serve --embedded without an APP
				index, _ := strconv.Atoi(os.Getenv("OLIO_INDEX"))
				d := demo.New(index)
				return (&router.Server{Handler: d, OnShutdown: d.GoAway}).Serve()
			}
			env := demo.Env{Port: os.Getenv("PORT"), NotifySocket: os.Getenv(monitor.NotifyEnv)}
			if s := os.Getenv("OLIO_INDEX"); s != "" {
				var err error
				if env.Index, err = strconv.Atoi(s); err != nil {
					return fmt.Errorf("OLIO_INDEX %q is not a number", s)
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			// Plain lines on stdout: the router that runs the demo stamps each with time,
			// level and worker.
			return demo.Run(ctx, env, log.New(c.App.Writer, "", 0))
		},
	}
}
