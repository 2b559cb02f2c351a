// Command olio is a pre-fork, hash-routing cluster for HTTP services that need key
// affinity. See README.md and `olio help`.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	app := &cli.App{
		Name:                 "olio",
		Usage:                "a pre-fork, hash-routing cluster for HTTP services that need key affinity",
		Version:              version,
		HideVersion:          true,
		EnableBashCompletion: false,
		Commands: []*cli.Command{
			serveCommand(),
			statusCommand(),
			reloadCommand(),
			scaleCommand(),
			stopCommand(),
			demoCommand(),
			versionCommand(),
			routerCommand(),
		},
		// Errors are printed once, below, in one line.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "olio: %v\n", err)
		var exit cli.ExitCoder
		if errors.As(err, &exit) && exit.ExitCode() != 0 {
			os.Exit(exit.ExitCode())
		}
		os.Exit(1)
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print olio's version",
		Action: func(c *cli.Context) error {
			fmt.Println("olio", version)
			return nil
		},
	}
}
