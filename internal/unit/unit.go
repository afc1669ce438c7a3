package unit

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/control"
)

// Spec is what the units are made of.
type Spec struct {
	// Name is the service's name: NAME.service, NAME.socket, /etc/NAME.
	Name string
	// Listen are the sockets, as `baton run --listen` takes them
	// (NAME=URL); none means http=tcp://127.0.0.1:8080.
	Listen []string
	// User runs baton and its workers; empty means root.
	User string
	// Baton is the absolute path of the baton executable.
	Baton string
	// Command is the worker's command line.
	Command []string
	// WorkDir is the workers' working directory; empty means the
	// service's state directory, /var/lib/NAME, the one place besides
	// /run/NAME the sandbox lets it write.
	WorkDir string
	// JIT leaves out MemoryDenyWriteExecute=, which a runtime that
	// compiles to memory it then runs (Node, Java, PyPy) cannot start under.
	JIT bool
}

// hidden are the directories the service's sandbox hides (ProtectHome=,
// PrivateTmp=): a path under one of them is not there for the service.
var hidden = []struct{ dir, by string }{
	{"/home", "ProtectHome=yes"},
	{"/root", "ProtectHome=yes"},
	{"/run/user", "ProtectHome=yes"},
	{"/tmp", "PrivateTmp=yes"},
	{"/var/tmp", "PrivateTmp=yes"},
}

// HiddenBy returns the setting of the service's sandbox that hides the
// absolute path p from it, "" if none does.
func HiddenBy(p string) string {
	p = filepath.Clean(p)
	for _, h := range hidden {
		if p == h.dir || strings.HasPrefix(p, h.dir+"/") {
			return h.by
		}
	}
	return ""
}

// File is one file to write.
type File struct {
	Path    string // absolute, under the root given to Files
	Content string
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// plain reports whether s can stand in a unit file as it is: no control
// character (a newline would start a directive of its own), no space (it
// would split a command line) and no '%' (systemd expands specifiers).
func plain(s string) bool {
	for _, r := range s {
		if r < ' ' || r == 0x7f || r == ' ' || r == '%' {
			return false
		}
	}
	return true
}

// Files returns the units and the config for s, at their paths under root
// ("/" for the real system).
func Files(s Spec, root string) ([]File, error) {
	if !validName.MatchString(s.Name) || len(s.Name) > 200 {
		return nil, fmt.Errorf("unit: name %q: want letters, digits, '_', '.' and '-', starting with a letter or digit", s.Name)
	}
	if !filepath.IsAbs(s.Baton) || !plain(s.Baton) {
		return nil, fmt.Errorf("unit: baton executable %q: want an absolute path without spaces, control characters or '%%'", s.Baton)
	}
	if len(s.Command) == 0 {
		return nil, errors.New("unit: no worker command: give it after --")
	}
	if s.User != "" && !validName.MatchString(s.User) {
		return nil, fmt.Errorf("unit: user %q: not a user name", s.User)
	}
	if by := HiddenBy(s.Baton); by != "" {
		return nil, fmt.Errorf("unit: baton executable %s: the service cannot see it (%s): install baton in /usr/local/bin and give --baton /usr/local/bin/baton", s.Baton, by)
	}
	stateDir := filepath.Join("/var/lib", s.Name)
	workDir := s.WorkDir
	if workDir == "" {
		workDir = stateDir
	}
	if !filepath.IsAbs(workDir) || !plain(workDir) {
		return nil, fmt.Errorf("unit: working directory %q: want an absolute path without spaces, control characters or '%%'", workDir)
	}
	if by := HiddenBy(workDir); by != "" {
		return nil, fmt.Errorf("unit: working directory %s: the service cannot see it (%s): give --workdir a directory outside /home, /root, /tmp and /var/tmp", workDir, by)
	}
	for _, arg := range s.Command {
		if by := HiddenBy(arg); strings.HasPrefix(arg, "/") && by != "" {
			return nil, fmt.Errorf("unit: worker command: %s: the service cannot see it (%s): move it out of /home, /root, /tmp and /var/tmp", arg, by)
		}
	}
	runtimeDir := filepath.Join("/run", s.Name)
	controlSocket := control.ServiceSocket("/run", s.Name) // where baton status NAME looks
	if len(controlSocket) > 107 {
		return nil, fmt.Errorf("unit: name %q: too long for the control socket's path %s (at most 107 bytes)", s.Name, controlSocket)
	}
	listen := s.Listen
	if len(listen) == 0 {
		listen = []string{"http=tcp://127.0.0.1:8080"}
	}
	type socket struct{ unit, name, directive, addr, url, options string }
	var sockets []socket
	for i, l := range listen {
		name, url, ok := strings.Cut(l, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("unit: --listen %q: want NAME=URL", l)
		}
		network, addr, err := config.ParseAddress(url)
		if err != nil {
			return nil, fmt.Errorf("unit: --listen %q: %w", l, err)
		}
		if !validName.MatchString(name) {
			return nil, fmt.Errorf("unit: --listen %q: the name may hold letters, digits, '_', '.' and '-' only", l)
		}
		if !plain(addr) {
			return nil, fmt.Errorf("unit: --listen %q: the address may not hold control characters, spaces or '%%'", l)
		}
		if network == "unix" && (filepath.Clean(addr) == runtimeDir || strings.HasPrefix(filepath.Clean(addr), runtimeDir+"/")) {
			// systemd empties RuntimeDirectory= when the service stops,
			// while the .socket unit holds the socket on.
			return nil, fmt.Errorf("unit: --listen %q: systemd removes %s when %s stops, socket and all: put it beside, as unix:///run/%s-%s.sock", l, runtimeDir, s.Name, s.Name, name)
		}
		directive, options := "ListenStream", ""
		switch {
		case strings.HasPrefix(network, "udp"):
			directive = "ListenDatagram"
		case strings.HasPrefix(network, "tcp") && s.User == "":
			// worker.balance = "auto" then gives each worker a socket
			// of its own beside this one (docs/balancing.md).
			options = "# Lets baton bind a socket per worker beside it (worker.balance = \"auto\").\nReusePort=yes\n"
		case strings.HasPrefix(network, "tcp"):
			options = fmt.Sprintf("# No ReusePort=yes: the kernel lets only the socket's owner (root, as systemd\n# binds it) bind beside it, and baton runs as %s: the workers share it.\n", s.User)
		}
		unit := s.Name + ".socket"
		if i > 0 {
			unit = s.Name + "-" + name + ".socket"
		}
		sockets = append(sockets, socket{unit: unit, name: name, directive: directive, addr: addr, url: url, options: options})
	}

	etc := filepath.Join(root, "etc")
	units := filepath.Join(etc, "systemd", "system")
	cfgPath := filepath.Join("/etc", s.Name, "baton.toml")
	var files []File
	var socketUnits []string
	for _, so := range sockets {
		socketUnits = append(socketUnits, so.unit)
		files = append(files, File{Path: filepath.Join(units, so.unit), Content: fmt.Sprintf(`# %s: listener %q of %s, held by systemd so that no connection is refused
# while baton restarts; written by baton unit.
[Unit]
Description=%s listener %s (served by baton)

[Socket]
%s=%s
FileDescriptorName=%s
%sService=%s.service

[Install]
WantedBy=sockets.target
`, so.unit, so.name, s.Name, s.Name, so.name, so.directive, so.addr, so.name, so.options, s.Name)})
	}
	all := strings.Join(socketUnits, " ")
	files = append(files, File{Path: filepath.Join(units, s.Name+".service"), Content: fmt.Sprintf(`# %[1]s.service: %[1]s's workers, supervised by baton; written by baton unit.
# systemctl reload %[1]s: a new generation of workers, the old one drained once
# it serves (the reload fails, and the old workers stay, if it does not).
[Unit]
Description=%[1]s (workers supervised by baton)
Requires=%[2]s
After=%[2]s network.target

[Service]
Type=notify
# A self-upgraded baton is a new process that announces itself (MAINPID=).
NotifyAccess=all
ExecStart=%[3]s run --config %[4]s
ExecReload=%[3]s reload
# SIGTERM to baton alone: it drains its workers itself.
KillMode=mixed
# Above worker.drain_timeout (30s), so a drain is never cut short.
TimeoutStopSec=45
Restart=on-failure
# systemd's start limit stays (5 starts in 10s): a crash loop ends "failed", for
# OnFailure= and alerts. After restarting by hand that often: systemctl reset-failed %[1]s
# baton pings the watchdog from its event loop every 5s.
WatchdogSec=10
Sockets=%[2]s
# /run/%[1]s holds baton's control socket (control.socket) and is removed at
# stop: a unix socket of a .socket unit goes beside it, not in it.
RuntimeDirectory=%[1]s
# /var/lib/%[1]s: the one other place the workers may write.
StateDirectory=%[1]s
WorkingDirectory=%[5]s
# The workers inherit it: a non-Go worker would start at a soft limit of 1024.
LimitNOFILE=524288
%[6]s
# Sandboxing a network service keeps working under (docs/systemd.md).
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
PrivateDevices=yes
DevicePolicy=closed
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
%[7]sRemoveIPC=yes
# AF_NETLINK: baton asks sock_diag whether a worker it is about to stop has
# accepted connections it has not read yet (docs/balancing.md).
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
# A call outside the filter fails with EPERM rather than killing the worker.
SystemCallErrorNumber=EPERM
UMask=0027

[Install]
WantedBy=multi-user.target
`, s.Name, all, s.Baton, cfgPath, workDir, privileges(s.User), mdwe(s.JIT))})

	var b strings.Builder
	fmt.Fprintf(&b, "# baton's configuration for %s; written by baton unit. Reference: docs/config.md in baton's source.\n", s.Name)
	for _, so := range sockets {
		fmt.Fprintf(&b, "\n[[listen]]\n# from %s (FileDescriptorName=%s)\nname = %s\naddress = %s\n", so.unit, so.name, strconv.Quote(so.name), strconv.Quote(so.url))
	}
	q := make([]string, len(s.Command))
	for i, c := range s.Command {
		q[i] = strconv.Quote(c)
	}
	fmt.Fprintf(&b, "\n[control]\n# in RuntimeDirectory=: baton status %s (or --config %s) finds it\nsocket = %s\n", s.Name, cfgPath, strconv.Quote(controlSocket))
	fmt.Fprintf(&b, "\n[worker]\ncommand = [%s]\n# count = 4          # default: one per CPU\ndrain_timeout = \"30s\"\n\n[reload]\n# below systemd's TimeoutStartSec (90s), which bounds ExecReload= too\ntimeout = \"30s\"\n", strings.Join(q, ", "))
	files = append(files, File{Path: filepath.Join(etc, s.Name, "baton.toml"), Content: b.String()})
	return files, nil
}

// privileges returns the service's user and what it may do beyond the
// sandbox. Root (no user) binds a socket per worker beside systemd's
// (ReusePort=yes, so also below port 1024) and loads the eBPF program that
// deals connections to them in turn (docs/balancing.md): CAP_BPF,
// CAP_NET_BIND_SERVICE and the bpf() call, nothing else of root's. Another
// user shares systemd's sockets and needs no capability at all.
func privileges(user string) string {
	if user == "" {
		return `# root, but for two capabilities: a socket per worker beside systemd's (even below
# port 1024) and the eBPF program that deals connections to them (docs/balancing.md).
CapabilityBoundingSet=CAP_BPF CAP_NET_BIND_SERVICE
SystemCallFilter=@system-service bpf`
	}
	return "User=" + user + "\nCapabilityBoundingSet=\nSystemCallFilter=@system-service"
}

// mdwe returns the MemoryDenyWriteExecute= line, none for a JIT runtime.
func mdwe(jit bool) string {
	if jit {
		return "# No MemoryDenyWriteExecute=yes: the worker's runtime compiles to memory it runs (--jit).\n"
	}
	return "# A JIT runtime (Node, Java, PyPy) cannot start under it: baton unit --jit leaves it out.\nMemoryDenyWriteExecute=yes\n"
}
