// Package unit writes the systemd units that run a service under baton
// (`baton unit`): a .socket unit per listener, so that systemd holds
// the sockets across baton's own restarts, a Type=notify .service that
// reloads through `baton reload`, and a baton.toml that claims the
// sockets by name.
package unit
