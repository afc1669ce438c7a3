package main

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/batonhq/baton/internal/control"
	"github.com/batonhq/baton/internal/excerpt"
)

// source is where a command's control socket comes from.
type source int

const (
	fromControl    source = iota + 1 // --control PATH
	fromConfig                       // control.socket of --config FILE
	fromConfigRun                    // the running baton started with --config FILE
	fromPID                          // --pid PID
	fromService                      // SERVICE: the baton of that systemd service
	fromEnv                          // $BATON_SOCKET
	fromRuntimeDir                   // $RUNTIME_DIRECTORY/baton.sock (ExecReload=)
	fromUser                         // the one baton of this user running
)

// naming is what the command line and the environment say about the
// baton a command means.
type naming struct {
	control      string // --control
	config       string // --config
	configSocket string // control.socket of --config's file
	pid          int    // --pid
	service      string // SERVICE, the command's first operand
	envSocket    string // $BATON_SOCKET
	runtimeDir   string // systemd's $RUNTIME_DIRECTORY
}

// sourceOf says where the control socket comes from: --control, else
// --config (its control.socket, else the baton started with that file:
// nothing below overrides a file that was named), else --pid, else a
// SERVICE's runtime directory, else $BATON_SOCKET, else
// $RUNTIME_DIRECTORY, else the one baton of this user running. A SERVICE
// with one of the flags is refused before (conflict).
func sourceOf(n naming) source {
	switch {
	case n.control != "":
		return fromControl
	case n.config != "" && n.configSocket != "":
		return fromConfig
	case n.config != "":
		return fromConfigRun
	case n.pid > 0:
		return fromPID
	case n.service != "":
		return fromService
	case n.envSocket != "":
		return fromEnv
	case n.runtimeDir != "":
		return fromRuntimeDir
	}
	return fromUser
}

// choose picks the one baton of found: the batons of uid running, or with
// config set those of them started with that file.
func choose(found []control.Instance, config string, uid int) (control.Instance, error) {
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) == 0 && config != "":
		return control.Instance{}, fmt.Errorf("no running baton of uid %d was started with --config %s (name another with --control PATH or --pid PID)", uid, config)
	case len(found) == 0:
		return control.Instance{}, fmt.Errorf("no baton of uid %d is running here, or none answers on a control socket: give --control PATH, --config FILE or --pid PID", uid)
	}
	list := make([]string, len(found))
	for i, b := range found {
		list[i] = fmt.Sprintf("pid %d (%s)", b.PID, b.Control)
	}
	if config != "" {
		return control.Instance{}, fmt.Errorf("%d batons were started with --config %s: %s: pick one with --pid PID", len(found), config, strings.Join(list, ", "))
	}
	return control.Instance{}, fmt.Errorf("%d batons are running: %s: pick one with --pid PID", len(found), strings.Join(list, ", "))
}

// splitOperands returns the SERVICE and the argument among a command's
// operands: [SERVICE] for a command that takes no argument, [SERVICE] ARG
// for one that does, as systemctl and pm2 put a service's name first
// (baton scale app 4).
func splitOperands(c *control.Command, ops []string) (service, arg string, err error) {
	if c.Arg == nil {
		switch len(ops) {
		case 0:
			return "", "", nil
		case 1:
			return ops[0], "", nil
		}
		return "", "", fmt.Errorf("unexpected argument %s: baton %s takes a service's name at most (baton %s -h lists its flags)", excerpt.Quote(ops[1]), c.Name, c.Name)
	}
	switch len(ops) {
	case 0:
		return "", "", fmt.Errorf("no argument: want %s (baton %s -h says more)", c.Usage, c.Name)
	case 1:
		return "", ops[0], nil
	case 2:
		return ops[0], ops[1], nil
	}
	got := make([]string, len(ops))
	for i, o := range ops {
		got[i] = excerpt.Quote(o)
	}
	return "", "", fmt.Errorf("want [SERVICE] %s, got %d arguments: %s", c.Usage, len(ops), strings.Join(got, " "))
}

// conflict says why n names the baton twice, nil if it does not: a
// SERVICE goes with none of --control, --config and --pid.
func conflict(n naming) error {
	var flags []string
	if n.control != "" {
		flags = append(flags, "--control")
	}
	if n.config != "" {
		flags = append(flags, "--config")
	}
	if n.pid != 0 {
		flags = append(flags, "--pid")
	}
	if n.service == "" || len(flags) == 0 {
		return nil
	}
	return fmt.Errorf("service %s and %s name the baton twice: give one", excerpt.Quote(n.service), strings.Join(flags, " and "))
}

// validService is a systemd service's name as its RuntimeDirectory= can
// be: no path separator, not "." or "..".
var validService = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_@:.-]*$`)

// serviceName returns the systemd service arg names ("app" for "app" or
// "app.service"), or why it names none.
func serviceName(arg string) (string, error) {
	name := strings.TrimSuffix(arg, ".service")
	if !validService.MatchString(name) || len(name) > 200 {
		return "", fmt.Errorf("service %s: want a systemd service's name, as systemctl takes it (app or app.service: letters, digits and _ @ : . -)", excerpt.Quote(arg))
	}
	return name, nil
}

// errNoService says that no baton was found for a SERVICE: the request
// failed, the command line was fine.
var errNoService = errors.New("no baton of service")

// serviceSocket returns the control socket of the baton of service name:
// the one of candidates (control.ServiceSocket under each of
// control.ServiceRunRoots) that is a socket, as isSocket says.
func serviceSocket(name string, candidates []string, isSocket func(string) bool) (string, error) {
	var found []string
	for _, c := range candidates {
		if isSocket(c) {
			found = append(found, c)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", fmt.Errorf("%w %s: no control socket at %s (is %s.service running, with RuntimeDirectory=%s? else give --control PATH)", errNoService, name, strings.Join(candidates, " or "), name, name)
	}
	return "", fmt.Errorf("service %s: control sockets at both %s: give --control PATH", name, strings.Join(found, " and "))
}
