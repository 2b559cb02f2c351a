package main

import (
	"os"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// controlEnv names the control socket for olio serve (the socket it makes) and for every
// command that talks to a running olio, so that an olio with a socket of its own (a second
// instance, a systemd RuntimeDirectory, a test) needs no --control on each command.
const controlEnv = "OLIO_CONTROL"

// globalControlFlag is --control before the command: olio --control PATH status.
func globalControlFlag() cli.Flag {
	return &cli.StringFlag{Name: "control", Usage: "control socket `PATH` for the command that follows (after the command, --control wins; default: $" + controlEnv + ", else olio serve's default)"}
}

// Where the control socket's path came from, highest precedence first.
const (
	controlFromCommand = "command flag" // olio status --control PATH
	controlFromGlobal  = "global flag"  // olio --control PATH status
	controlFromEnv     = "environment"  // OLIO_CONTROL=PATH olio status
	controlFromDefault = "default"      // defaultControl
)

// controlPath is the control socket that c names, and where the path came from: --control
// after the command, else --control before it, else $OLIO_CONTROL, else the default.
func controlPath(c *cli.Context) (path, from string) {
	if c.IsSet("control") { // the command's own flag (it reads no environment variable)
		return c.String("control"), controlFromCommand
	}
	if p, from := controlOutside(c); from != "" {
		return p, from
	}
	return defaultControl(), controlFromDefault
}

// controlOutside is the control socket named outside the command's own flags: --control
// before the command, else $OLIO_CONTROL; from is "" when neither names one.
func controlOutside(c *cli.Context) (path, from string) {
	for _, parent := range c.Lineage()[1:] { // the app's context holds its flags
		if parent.IsSet("control") {
			return parent.String("control"), controlFromGlobal
		}
	}
	if p := os.Getenv(controlEnv); p != "" {
		return p, controlFromEnv
	}
	return "", ""
}

// commandAt is the index in args (args[0] is the program) of the command, past the global
// flags before it (olio --control PATH status); len(args) when there is none.
func commandAt(app *cli.App, args []string) int {
	i := 1
	for i < len(args) {
		a := args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			return i
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := lookupFlag(app.Flags, name)
		if _, isBool := f.(*cli.BoolFlag); f != nil && !isBool && !hasValue {
			i++ // its value
		}
		i++
	}
	return i
}

// withCommandFlagsFirst is args with the arguments after the command at index at put
// through flagsFirst with the command's flags.
func withCommandFlagsFirst(cmd *cli.Command, args []string, at int) []string {
	return append(slices.Clone(args[:at+1]), flagsFirst(cmd.Flags, args[at+1:])...)
}
