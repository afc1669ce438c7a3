// Package nspawn boots throw-away systemd containers for integration tests.
//
// Boot starts the host's own systemd as PID 1 of a systemd-nspawn container
// whose root is a fresh tmpfs (--volatile=yes) with the host's /usr mounted
// read-only, sharing the host's network: a socket unit inside listens on the
// host's loopback, so a test connects to it directly. The sequence and its
// pitfalls are those of docs/testing.md ("Real systemd, in a throw-away container").
// A Machine runs commands inside through nsenter(1) into its leader (the
// container's PID 1): Run, Systemctl, Show, WaitActive, MainPID, Journal and
// WriteFile. Shutdown powers the container off through the leader, waits with
// a bound, then kills by pid and checks that nothing of the container is left.
//
// Each machine gets its own cgroup. nspawn --keep-unit puts every container in
// "<caller's cgroup>/payload"; without a cgroup per machine, two containers
// booted at once (test packages run in parallel) would share their units'
// cgroups, and stopping app.service in one would wait for the other's.
//
// Process hygiene and its limits: every process started here is ended by pid.
// Call Shutdown from t.Cleanup, which runs when a test fails or calls
// t.Fatal. If the test binary dies without cleaning up (a panic, go test's
// -timeout, SIGINT, even SIGKILL), systemd-nspawn receives SIGTERM as its
// parent-death signal and halts the container itself (TestParentDeath checks
// this); only an empty cgroup directory "nspawn-<name>" and a temporary
// directory "baton-nspawn-*" are left. What cannot be cleaned up is a
// SIGKILL of systemd-nspawn itself: its container then keeps running under
// the host's PID 1 and keeps its ports; find its leader (a process named
// systemd whose parent is not systemd-nspawn) and power it off with
// `nsenter -t <leader> -a systemctl poweroff`.
//
// Boot needs root and systemd-nspawn (Debian package systemd-container).
// Available says what is missing, so tests can skip with that reason; Install
// or install.sh installs the package.
package nspawn
