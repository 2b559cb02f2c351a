package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

func statusCommand() *cli.Command {
	return &cli.Command{Name: "status", Usage: "show the workers of a running olio", Action: notYet}
}
func reloadCommand() *cli.Command {
	return &cli.Command{Name: "reload", Usage: "reload the config and restart every app, worker by worker", Action: notYet}
}
func scaleCommand() *cli.Command {
	return &cli.Command{Name: "scale", Usage: "change the number of workers", Action: notYet}
}
func stopCommand() *cli.Command {
	return &cli.Command{Name: "stop", Usage: "stop a running olio gracefully", Action: notYet}
}

func notYet(*cli.Context) error { return errors.New("not implemented yet") }
