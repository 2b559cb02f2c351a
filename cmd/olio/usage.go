package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// usageError is a mistake on the command line. Its exit status is 2, as for a bad flag
// in most Unix tools.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// ExitCode makes usageError a cli.ExitCoder.
func (e *usageError) ExitCode() int { return 2 }

func badUsage(format string, a ...any) error {
	return &usageError{fmt.Sprintf(format, a...)}
}

// unexpectedArg is the error for an argument a command does not take.
func unexpectedArg(arg string) error {
	return badUsage("unexpected argument %q", arg)
}

// flagsFirst moves the flags in args (a command's arguments) before its other arguments,
// keeping the order within each, so that `olio scale 5 --control PATH` reads as `olio
// scale --control PATH 5`, as kubectl, docker and systemctl take them: urfave/cli stops
// reading flags at the first argument. A flag's value goes with it; "--" and what follows
// stay last, as arguments; so do negative numbers (olio scale -1), after a "--" so that
// they are not read as flags.
func flagsFirst(flags []cli.Flag, args []string) []string {
	var front, back []string
	negative := false
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			back = append(back, args[i:]...)
			break
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if len(arg) < 2 || arg[0] != '-' {
			back = append(back, arg)
			continue
		}
		if _, err := strconv.ParseFloat(name, 64); err == nil {
			negative = true
			back = append(back, arg)
			continue
		}
		front = append(front, arg)
		f := lookupFlag(flags, name)
		if _, isBool := f.(*cli.BoolFlag); f != nil && !isBool && !hasValue && i+1 < len(args) {
			i++
			front = append(front, args[i])
		}
	}
	if negative && back[0] != "--" {
		front = append(front, "--")
	}
	return append(front, back...)
}

// negativeWorkers is what is wrong with `olio scale -1`.
const negativeWorkers = "the number of workers must be 0 or more"

// flagError says in one line what is wrong with the flags in args, which cmd could not
// parse (err is urfave/cli's, the fallback); name is the command's name, "" for olio's own.
func flagError(cmd *cli.Command, name string, args []string, err error) error {
	help := "olio --help"
	if name != "" {
		help = "olio " + name + " --help"
	}
	problem, number := badFlag(cmd.Flags, args)
	switch {
	case number != "" && name == "scale":
		return badUsage("%q: %s", number, negativeWorkers)
	case problem == "":
		problem = err.Error()
	}
	return badUsage("%s; see %s", problem, help)
}

// badFlag walks args as the flag package does and says what is wrong with the first flag
// it cannot take: unknown, missing its value, or a value of the wrong kind; problem is ""
// if it finds nothing wrong. When the problem is a negative number where a flag was
// expected, number is that argument.
func badFlag(flags []cli.Flag, args []string) (problem, number string) {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" || len(arg) < 2 || arg[0] != '-' {
			return "", "" // the flags end here
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(arg[1:], "-"), "=")
		if _, err := strconv.ParseFloat(name, 64); err == nil {
			return fmt.Sprintf("unexpected argument %q", arg), arg
		}
		f := lookupFlag(flags, name)
		if f == nil {
			return "unknown flag " + dashed(name), ""
		}
		if b, ok := f.(*cli.BoolFlag); ok {
			if _, err := strconv.ParseBool(value); hasValue && err != nil {
				long := dashed(b.Name)
				return fmt.Sprintf("invalid value %q for %s: use %s or %s=false", value, dashed(name), long, long), ""
			}
			continue
		}
		if !hasValue {
			if i+1 == len(args) {
				return dashed(name) + " needs a value", ""
			}
			i++
			value = args[i]
		}
		if why := badValue(f, value); why != "" {
			return fmt.Sprintf("invalid value %q for %s: %s", value, dashed(name), why), ""
		}
	}
	return "", ""
}

// badValue says why value does not suit f, or "".
func badValue(f cli.Flag, value string) string {
	switch f.(type) {
	case *cli.IntFlag:
		if _, err := strconv.ParseInt(value, 0, strconv.IntSize); err != nil {
			return "want a whole number"
		}
	case *cli.DurationFlag:
		if _, err := time.ParseDuration(value); err != nil {
			if _, err := strconv.ParseFloat(value, 64); err == nil {
				return "durations need a unit, like 10s"
			}
			return "want a duration like 10s, 1m30s or 500ms"
		}
	}
	return ""
}

func lookupFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// dashed is a flag's name as it is typed: -h, --workers.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}
