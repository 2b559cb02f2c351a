// Command olio is a pre-fork, hash-routing cluster for HTTP services that need key
// affinity. See README.md and `olio help`.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=…"; otherwise it is the
// module version and VCS revision from the build info (buildVersion).
var version = buildVersion(debug.ReadBuildInfo())

// buildVersion is "v1.2.3" for a module built by go install at a tag, else the module
// version (or "devel") and the VCS revision: "devel 1a2b3c4d5e6f (modified)".
func buildVersion(bi *debug.BuildInfo, ok bool) string {
	if !ok {
		return "dev"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = " (modified)"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" && !strings.Contains(v, rev) {
		v += " " + rev + modified
	}
	return v
}

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run runs olio's command line args (args[0] is the program) and returns the exit status.
// A failure is one line on stderr: "olio CMD: what is wrong", exit status 2 for a mistake
// on the command line, 1 for anything else.
func run(args []string, stdout, stderr io.Writer) int {
	app := newApp()
	app.Writer, app.ErrWriter = stdout, stderr
	var unknown string
	app.CommandNotFound = func(_ *cli.Context, name string) { unknown = name }
	app.OnUsageError = func(c *cli.Context, err error, _ bool) error {
		return flagError(c.Command, "", args[1:], err)
	}
	err := app.Run(ownFlagsFirst(app, args))
	if err == nil && unknown != "" {
		err = badUsage("unknown command %q; run olio --help", unknown)
	}
	if err == nil {
		return 0
	}
	var ce *commandError
	var logged loggedError
	if errors.As(err, &logged) {
		return 1
	}
	if errors.As(err, &ce) {
		fmt.Fprintln(stderr, err)
	} else {
		fmt.Fprintf(stderr, "olio: %v\n", err)
	}
	var exit cli.ExitCoder
	if errors.As(err, &exit) && exit.ExitCode() != 0 {
		return exit.ExitCode()
	}
	return 1
}

// ownFlagsFirst lets the commands that talk to a running olio take their flags anywhere
// (flagsFirst). serve keeps its rule, flags before the app, whose own flags follow it.
func ownFlagsFirst(app *cli.App, args []string) []string {
	at := commandAt(app, args)
	if at+1 >= len(args) {
		return args
	}
	switch args[at] {
	case "status", "reload", "scale", "stop", "keys", "top":
	default:
		return args
	}
	cmd := app.Command(args[at])
	if cmd == nil {
		return args
	}
	return withCommandFlagsFirst(cmd, args, at)
}

// newApp builds olio's command line. Every command reports a flag it cannot parse, or an
// argument it does not take, in one line instead of urfave/cli's help dump, and names
// itself in its errors.
func newApp() *cli.App {
	app := &cli.App{
		Name:                 "olio",
		Usage:                "a pre-fork, hash-routing cluster for HTTP services that need key affinity",
		Version:              version,
		EnableBashCompletion: false,
		Flags:                []cli.Flag{globalControlFlag()},
		Commands: []*cli.Command{
			serveCommand(),
			statusCommand(),
			reloadCommand(),
			scaleCommand(),
			keysCommand(),
			topCommand(),
			stopCommand(),
			demoCommand(),
			versionCommand(),
			routerCommand(),
		},
		// Errors are printed once, by run, in one line.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	cli.VersionPrinter = printVersion // olio --version says what olio version does
	for _, cmd := range app.Commands {
		checkCommand(cmd)
	}
	return app
}

// checkCommand makes cmd report its bad flags in one line, refuse arguments when its help
// names none (ArgsUsage is empty), and prefix its errors with "olio CMD: ".
func checkCommand(cmd *cli.Command) {
	name, action, takesArgs := cmd.Name, cmd.Action, cmd.ArgsUsage != ""
	cmd.OnUsageError = func(c *cli.Context, err error, _ bool) error {
		// The parent's arguments are this command's name, then its own.
		return &commandError{name, flagError(cmd, name, c.Lineage()[1].Args().Tail(), err)}
	}
	cmd.Action = func(c *cli.Context) error {
		var err error
		if !takesArgs && c.NArg() > 0 {
			err = unexpectedArg(c.Args().First())
		} else {
			err = action(c)
		}
		if err != nil {
			return &commandError{name, err}
		}
		return nil
	}
}

// commandError is a command's failure, printed as "olio CMD: err".
type commandError struct {
	cmd string
	err error
}

func (e *commandError) Error() string { return "olio " + e.cmd + ": " + e.err.Error() }
func (e *commandError) Unwrap() error { return e.err }

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:   "version",
		Usage:  "print olio's version",
		Action: func(c *cli.Context) error { printVersion(c); return nil },
	}
}

// printVersion is what olio version and olio --version print.
func printVersion(c *cli.Context) {
	fmt.Fprintln(c.App.Writer, "olio", version)
}
