package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/batonhq/baton/internal/console"
)

// Every error baton's commands print is one line, "baton CMD: what is
// wrong: what to do", and a command line that is wrong exits 2
// (exitUsage); testdata/errors.golden holds each of them.

// fail prints err as the one line of `baton cmd`.
func fail(stderr io.Writer, cmd string, err error) {
	fmt.Fprintf(stderr, "baton %s: %s\n", cmd, console.Printable(message(cmd, err)))
}

// message is err's text without the prefixes that name what the command
// line says already: the package that answered ("control: ",
// "supervisor: ") and the command itself ("scale: ").
func message(cmd string, err error) string {
	s := err.Error()
	for {
		cut := false
		for _, p := range []string{"control: ", "supervisor: ", cmd + ": "} {
			if rest, ok := strings.CutPrefix(s, p); ok && rest != "" {
				s, cut = rest, true
			}
		}
		if !cut {
			return s
		}
	}
}

// parseFlags parses args into fs, whose usage is for -h alone: a wrong
// flag is one line saying where to read about the flags. ok is false when
// the command is over (help, or a usage error): code says how it ends.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	return flagError(err, fs.Name(), func() { fs.Usage() }, stderr)
}

// flagError ends a command whose flags did not parse: help prints usage,
// another error one line; ok when err is nil.
func flagError(err error, name string, usage func(), stderr io.Writer) (code int, ok bool) {
	switch {
	case err == nil:
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		usage()
		return exitOK, false
	}
	cmd := strings.TrimPrefix(name, "baton ")
	fail(stderr, cmd, fmt.Errorf("%w (baton %s -h lists its flags)", err, cmd))
	return exitUsage, false
}
