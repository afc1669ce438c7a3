package main

import (
	"fmt"
	"strings"

	"github.com/batonhq/baton/internal/control"
)

// source is where a command's control socket comes from.
type source int

const (
	fromControl    source = iota + 1 // --control PATH
	fromConfig                       // control.socket of --config FILE
	fromConfigRun                    // the running baton started with --config FILE
	fromPID                          // --pid PID
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
	envSocket    string // $BATON_SOCKET
	runtimeDir   string // systemd's $RUNTIME_DIRECTORY
}

// sourceOf says where the control socket comes from: --control, else
// --config (its control.socket, else the baton started with that file:
// nothing below overrides a file that was named), else --pid, else
// $BATON_SOCKET, else $RUNTIME_DIRECTORY, else the one baton of this
// user running.
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
