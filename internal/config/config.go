package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/batonhq/baton/internal/cpulimit"
	"github.com/batonhq/baton/internal/excerpt"
)

// ReadyFD is worker.ready's mode for a worker that reports readiness by
// writing a line to the descriptor BATON_READY_FD names.
const ReadyFD = "fd"

// The balancing modes of worker.balance.
const (
	// BalanceAuto, the default, is decided when baton starts: reuseport
	// where every TCP listener allows it, else shared
	// (docs/balancing.md, "auto").
	BalanceAuto       = "auto"
	BalanceShared     = "shared"      // every worker accepts on the one socket
	BalanceReusePort  = "reuseport"   // a SO_REUSEPORT socket per worker, held and steered by baton
	BalanceRoundRobin = "round-robin" // baton accepts and passes each connection on
)

// Defaults applied by Validate when a key is unset.
const (
	DefaultDrainTimeout  = 30 * time.Second
	DefaultReloadTimeout = 60 * time.Second
	DefaultReady         = "notify"
	DefaultMaxDraining   = 2

	DefaultRestartLimit  = 10
	DefaultRestartWindow = 60 * time.Second
	DefaultBackoffMin    = 100 * time.Millisecond
	DefaultBackoffMax    = 15 * time.Second
	DefaultStableAfter   = 30 * time.Second
	DefaultOnGiveUp      = "exit"

	// DefaultChannelTimeout is how long a round-robin worker may leave a
	// connection it was passed unread: longer than a pause of a worker
	// that reads its channel (a collection, a busy event loop), short
	// enough that the clients it strands still get an answer.
	DefaultChannelTimeout = 5 * time.Second

	// MaxWorkers bounds worker.count: each worker is a process with its
	// own descriptors in baton, and a typo must not fork a hundred
	// thousand of them.
	MaxWorkers = 1024
)

// ErrInvalid is wrapped by every validation error, so callers can tell bad
// input from a failure to read the file.
var ErrInvalid = errors.New("config: invalid")

// Config is baton's whole configuration.
type Config struct {
	Listen  []Listener `toml:"listen"`
	Worker  Worker     `toml:"worker"`
	Reload  Reload     `toml:"reload"`
	Restart Restart    `toml:"restart"`
	Stop    Stop       `toml:"stop"`
	Control Control    `toml:"control"`
	Systemd Systemd    `toml:"systemd"`

	// Path is the file the config was read from; empty when it came from
	// flags alone.
	Path string `toml:"-"`

	// origin maps a key ("worker.count", "listen[1].address") to where it
	// was set ("baton.toml:12" or "flag --workers"), for error messages.
	origin map[string]string
}

// Listener is one named socket the workers serve on.
type Listener struct {
	// Name is how workers and systemd refer to the socket
	// (LISTEN_FDNAMES, FileDescriptorName=).
	Name string `toml:"name"`
	// Address is a URL: tcp://host:port, tcp4://, tcp6://, udp://, udp4://,
	// udp6://, or unix:///path.
	Address string `toml:"address"`

	// Network and Addr are Address split for net.Listen-style use; set by
	// Validate.
	Network string `toml:"-"`
	Addr    string `toml:"-"`
}

// Stream reports whether the listener is a stream (accepting) socket.
func (l Listener) Stream() bool { return !strings.HasPrefix(l.Network, "udp") }

// Worker says how to run the worker processes.
type Worker struct {
	// Command is the program and its arguments.
	Command []string `toml:"command"`
	// Count is the number of workers; 0 means one per CPU baton may use
	// (its affinity mask, lowered to its cgroup's CPU quota: cpulimit.CPUs).
	Count int `toml:"count"`
	// Ready is "notify" (READY=1 on the notify socket), "fd" (a line
	// written to the descriptor BATON_READY_FD names) or "delay:DURATION"
	// (ready after staying up that long).
	Ready string `toml:"ready"`
	// DrainTimeout is how long a worker told to stop may take before it is
	// killed.
	DrainTimeout Duration `toml:"drain_timeout"`
	// Env is added to the workers' environment.
	Env map[string]string `toml:"env"`
	// Watchdog, when not zero, is how long a ready worker may go without
	// sending WATCHDOG=1 before it is replaced (new first) and killed. The
	// worker learns it from WATCHDOG_USEC, as under systemd, whose watchdog
	// also starts once start-up is complete.
	Watchdog Duration `toml:"watchdog"`
	// MaxMemory, when not zero, is the resident memory above which a
	// worker is replaced gracefully (new first, then drained).
	MaxMemory Size `toml:"max_memory"`
	// Balance is how connections on the stream listeners reach the
	// workers: BalanceAuto (the default), BalanceShared,
	// BalanceReusePort or BalanceRoundRobin (docs/balancing.md). It
	// cannot change on a reload.
	Balance string `toml:"balance"`
	// ChannelTimeout is how long a worker may leave a connection passed
	// to it unread on its channel under round-robin before it is stuck:
	// its unread connections go to the other workers and it is replaced
	// (docs/balancing.md). 0 means DefaultChannelTimeout.
	ChannelTimeout Duration `toml:"channel_timeout"`

	// ReadyDelay is the parsed delay of a "delay:" Ready; zero for notify.
	ReadyDelay time.Duration `toml:"-"`
}

// Reload says how a new generation of workers replaces the old one.
type Reload struct {
	// Timeout is how long a new generation (the first one included) has to
	// become ready; a reload that misses it is rolled back.
	Timeout Duration `toml:"timeout"`
	// Surge is how many workers of a new generation start at once; 0 means
	// the whole generation.
	Surge int `toml:"surge"`
	// MaxDraining is how many old generations may drain at once; when one
	// more starts draining, the oldest is killed. 0 means
	// DefaultMaxDraining.
	MaxDraining int `toml:"max_draining"`
}

// Restart is the restart budget for workers that crash or leave on their
// own (docs/architecture.md, "Worker exit, crash and leaving").
type Restart struct {
	// Limit is how many unplanned restarts are allowed per Window.
	Limit  int      `toml:"limit"`
	Window Duration `toml:"window"`
	// BackoffMin is the delay before a slot's first restart after a crash;
	// it doubles with each further crash of the slot up to BackoffMax, and
	// is reset once a worker stayed up StableAfter.
	BackoffMin  Duration `toml:"backoff_min"`
	BackoffMax  Duration `toml:"backoff_max"`
	StableAfter Duration `toml:"stable_after"`
	// OnGiveUp is what happens once the budget is spent: "exit" (drain
	// what is left and exit non-zero, for systemd's Restart= and
	// OnFailure=) or "degrade" (stop respawning, keep the survivors).
	OnGiveUp string `toml:"on_giveup"`
}

// Stop says how baton stops (docs/architecture.md, "Stop").
type Stop struct {
	// Delay is how long baton stays a lame duck once a stop is asked for
	// (SIGTERM, SIGINT, baton stop): /readyz answers 503 at once while
	// the listeners stay open and the workers keep serving, so that a
	// load balancer that learns of the stop late (Kubernetes' endpoints)
	// sends its last connections to a socket still served. Then the
	// workers drain. 0 means none: they drain at once.
	Delay Duration `toml:"delay"`
}

// Size is a byte count written as an integer or with a unit: "512MiB",
// "2G", "100k".
type Size int64

// UnmarshalText parses a size.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = Size(v)
	return nil
}

// ParseSize parses "512MiB", "1.5G", "100k" or "1048576" (bytes). K, M, G
// and T are powers of 1024, with or without "iB"/"B".
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.TrimSpace(t[i:])
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) {
		return 0, fmt.Errorf("not a size: %s (use e.g. \"512MiB\")", excerpt.Quote(s))
	}
	mult := map[string]float64{"": 1, "B": 1,
		"K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10,
		"M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
		"G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30,
		"T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40,
	}[strings.ToUpper(unit)]
	if mult == 0 {
		return 0, fmt.Errorf("not a size: %s: unknown unit %s (use K, M, G or T)", excerpt.Quote(s), excerpt.Quote(unit))
	}
	// float64(math.MaxInt64) rounds up to 2^63, itself out of range.
	if f*mult >= math.MaxInt64 {
		return 0, fmt.Errorf("size %s is too large (at most 8 EiB)", excerpt.Quote(s))
	}
	return int64(f * mult), nil
}

// Systemd holds settings for running under systemd.
type Systemd struct {
	// FDStore keeps the sockets baton binds itself in systemd's fd store
	// (the unit needs FileDescriptorStoreMax=), so that a restart or a
	// crash of baton refuses no connection even without a .socket unit.
	FDStore bool `toml:"fd_store"`
}

// Control is baton's control socket.
type Control struct {
	// Socket is the control socket's path; empty means
	// $RUNTIME_DIRECTORY/baton.sock, else baton-PID/baton.sock in the
	// temporary directory.
	Socket string `toml:"socket"`
	// Metrics is the host:port of the HTTP listener for Prometheus
	// (/metrics) and health probes (/livez, /readyz); empty means none.
	Metrics string `toml:"metrics"`
}

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseDuration parses a Go duration string ("30s", "1m30s", "250ms"). A
// number without a unit other than 0 is an error that says how to write
// it: is "30" seconds or milliseconds?
func ParseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(s)
	if err == nil {
		return v, nil
	}
	if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
		return 0, noUnit(s)
	}
	return 0, fmt.Errorf("not a duration: %s (use a number with a unit, e.g. \"30s\")", excerpt.Quote(s))
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// defaultCount is worker.count's default, read once: a reload does not
// change the number of workers unless the file does.
var defaultCount = sync.OnceValue(cpulimit.CPUs)

// Validate fills in defaults and checks every key, returning the first
// problem as an error naming the key and where it was set.
func (c *Config) Validate() error {
	if len(c.Listen) == 0 {
		return c.errorf("listen", "at least one listener is required (--listen NAME=URL or [[listen]])")
	}
	seen := map[string]bool{}
	for i := range c.Listen {
		l := &c.Listen[i]
		key := fmt.Sprintf("listen[%d]", i)
		if l.Name == "" {
			return c.errorf(key+".name", "is required")
		}
		if strings.ContainsAny(l.Name, ":=\n\x00") || len(l.Name) > 255 {
			return c.errorf(key+".name", "%s: must not contain ':', '=' or control characters and be at most 255 bytes", excerpt.Quote(l.Name))
		}
		if seen[l.Name] {
			return c.errorf(key+".name", "%s is used by two listeners", excerpt.Quote(l.Name))
		}
		seen[l.Name] = true
		network, addr, err := ParseAddress(l.Address)
		if err != nil {
			return c.errorf(key+".address", "%w", err)
		}
		l.Network, l.Addr = network, addr
	}

	w := &c.Worker
	if len(w.Command) == 0 || w.Command[0] == "" {
		return c.errorf("worker.command", "is required (the program to run, after -- on the command line)")
	}
	if w.Count < 0 {
		return c.errorf("worker.count", "must be at least 1, got %d", w.Count)
	}
	if w.Count > MaxWorkers {
		return c.errorf("worker.count", "%d is more than %d workers", w.Count, MaxWorkers)
	}
	if w.Count == 0 {
		w.Count = defaultCount()
	}
	if w.Ready == "" {
		w.Ready = DefaultReady
	}
	switch {
	case w.Ready == "notify" || w.Ready == ReadyFD:
		w.ReadyDelay = 0
	case strings.HasPrefix(w.Ready, "delay:"):
		d, err := ParseDuration(strings.TrimPrefix(w.Ready, "delay:"))
		if err != nil {
			return c.errorf("worker.ready", "%s: %w", excerpt.Quote(w.Ready), err)
		}
		if d <= 0 {
			return c.errorf("worker.ready", "%s: want \"notify\", \"fd\" or \"delay:DURATION\" with a positive duration", excerpt.Quote(w.Ready))
		}
		w.ReadyDelay = d
	default:
		return c.errorf("worker.ready", "%s: want \"notify\", \"fd\" or \"delay:DURATION\"", excerpt.Quote(w.Ready))
	}
	switch w.Balance {
	case "":
		w.Balance = BalanceAuto
	case BalanceAuto, BalanceShared, BalanceReusePort, BalanceRoundRobin:
	default:
		return c.errorf("worker.balance", "%s: want %q, %q, %q or %q", excerpt.Quote(w.Balance), BalanceAuto, BalanceShared, BalanceReusePort, BalanceRoundRobin)
	}
	if w.DrainTimeout < 0 {
		return c.errorf("worker.drain_timeout", "must not be negative, got %s", w.DrainTimeout.Std())
	}
	if w.DrainTimeout == 0 {
		w.DrainTimeout = Duration(DefaultDrainTimeout)
	}
	if w.ChannelTimeout < 0 {
		return c.errorf("worker.channel_timeout", "must not be negative, got %s", w.ChannelTimeout.Std())
	}
	if w.ChannelTimeout == 0 {
		w.ChannelTimeout = Duration(DefaultChannelTimeout)
	}
	for k := range w.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return c.errorf("worker.env", "%s is not a valid variable name", excerpt.Quote(k))
		}
	}
	one, all := execLimits()
	if err := c.checkExec(os.Environ(), one, all); err != nil {
		return err
	}

	if c.Reload.Timeout < 0 {
		return c.errorf("reload.timeout", "must not be negative, got %s", c.Reload.Timeout.Std())
	}
	if c.Reload.Timeout == 0 {
		c.Reload.Timeout = Duration(DefaultReloadTimeout)
	}
	if c.Reload.Surge < 0 {
		return c.errorf("reload.surge", "must not be negative, got %d", c.Reload.Surge)
	}
	if c.Reload.MaxDraining < 0 {
		return c.errorf("reload.max_draining", "must be at least 1, got %d", c.Reload.MaxDraining)
	}
	if c.Reload.MaxDraining == 0 {
		c.Reload.MaxDraining = DefaultMaxDraining
	}
	if w.MaxMemory < 0 {
		return c.errorf("worker.max_memory", "must not be negative, got %d", w.MaxMemory)
	}
	if w.Watchdog < 0 {
		return c.errorf("worker.watchdog", "must not be negative, got %s", w.Watchdog.Std())
	}
	r := &c.Restart
	if r.Limit < 0 {
		return c.errorf("restart.limit", "must not be negative, got %d", r.Limit)
	}
	if r.Limit == 0 {
		r.Limit = DefaultRestartLimit
	}
	for _, d := range []struct {
		key string
		v   *Duration
		def time.Duration
	}{
		{"restart.window", &r.Window, DefaultRestartWindow},
		{"restart.backoff_min", &r.BackoffMin, DefaultBackoffMin},
		{"restart.backoff_max", &r.BackoffMax, DefaultBackoffMax},
		{"restart.stable_after", &r.StableAfter, DefaultStableAfter},
	} {
		if *d.v < 0 {
			return c.errorf(d.key, "must not be negative, got %s", d.v.Std())
		}
		if *d.v == 0 {
			*d.v = Duration(d.def)
		}
	}
	if r.BackoffMax < r.BackoffMin {
		return c.errorf("restart.backoff_max", "%s is below restart.backoff_min %s", r.BackoffMax.Std(), r.BackoffMin.Std())
	}
	switch r.OnGiveUp {
	case "":
		r.OnGiveUp = DefaultOnGiveUp
	case "exit", "degrade":
	default:
		return c.errorf("restart.on_giveup", "%s: want \"exit\" or \"degrade\"", excerpt.Quote(r.OnGiveUp))
	}
	if c.Stop.Delay < 0 {
		return c.errorf("stop.delay", "must not be negative, got %s", c.Stop.Delay.Std())
	}
	if a := c.Control.Metrics; a != "" {
		host, port, err := net.SplitHostPort(a)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 {
			return c.errorf("control.metrics", "%s: want host:port, such as 127.0.0.1:9100", excerpt.Quote(a))
		}
		if host == "" {
			return c.errorf("control.metrics", "%s: name the address to listen on (127.0.0.1:%s for this machine only, 0.0.0.0:%s for all)", excerpt.Quote(a), port, port)
		}
	}
	if p := c.Control.Socket; p != "" && (!strings.HasPrefix(p, "/") || len(p) > 107) {
		return c.errorf("control.socket", "%s: want an absolute path of at most 107 bytes", excerpt.Quote(p))
	}
	return nil
}

// ParseAddress splits a listener URL into a network and an address for it.
func ParseAddress(s string) (network, addr string, err error) {
	if s == "" {
		return "", "", errors.New("is required (e.g. \"tcp://127.0.0.1:8080\" or \"unix:///run/app.sock\")")
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return "", "", fmt.Errorf("%s: want a URL such as tcp://127.0.0.1:8080 or unix:///run/app.sock", excerpt.Quote(s))
	}
	switch u.Scheme {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		if u.Path != "" || u.RawQuery != "" || u.User != nil {
			return "", "", fmt.Errorf("%s: a %s address is scheme://host:port and nothing more", excerpt.Quote(s), u.Scheme)
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil || port == "" {
			return "", "", fmt.Errorf("%s: want %s://HOST:PORT", excerpt.Quote(s), u.Scheme)
		}
		if _, err := net.LookupPort(u.Scheme, port); err != nil {
			return "", "", fmt.Errorf("%s: bad port %s", excerpt.Quote(s), excerpt.Quote(port))
		}
		return u.Scheme, net.JoinHostPort(host, port), nil
	case "unix":
		if u.Host != "" || u.Path == "" {
			return "", "", fmt.Errorf("%s: want unix:///absolute/path (three slashes)", excerpt.Quote(s))
		}
		if len(u.Path) > 107 {
			return "", "", fmt.Errorf("%s: a unix socket path is at most 107 bytes", excerpt.Quote(s))
		}
		return "unix", u.Path, nil
	}
	return "", "", fmt.Errorf("%s: unknown scheme %s (want tcp, tcp4, tcp6, udp, udp4, udp6 or unix)", excerpt.Quote(s), excerpt.Quote(u.Scheme))
}

// errorf builds a validation error prefixed with the key and where it was
// set.
func (c *Config) errorf(key, format string, args ...any) error {
	where := c.origin[key]
	if where == "" {
		// A key inside an array element or a table: fall back to its
		// parent's position, which is still the right place to look.
		for k := key; where == "" && k != ""; {
			i := strings.LastIndexAny(k, ".[")
			if i < 0 {
				break
			}
			k = k[:i]
			where = c.origin[k]
		}
	}
	if where == "" && c.Path != "" {
		where = c.Path
	}
	prefix := "config: " + key
	if where != "" {
		prefix = "config: " + where + ": " + key
	}
	return fmt.Errorf("%s: %w", prefix, wrapInvalid(fmt.Errorf(format, args...)))
}

// wrapInvalid keeps the message as it is while making errors.Is(err,
// ErrInvalid) true.
func wrapInvalid(err error) error { return invalidError{err} }

type invalidError struct{ err error }

func (e invalidError) Error() string   { return e.err.Error() }
func (e invalidError) Unwrap() []error { return []error{e.err, ErrInvalid} }

func (c *Config) setOrigin(key, where string) {
	if c.origin == nil {
		c.origin = map[string]string{}
	}
	c.origin[key] = where
}
