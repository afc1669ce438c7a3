// Package systemd speaks systemd's protocols for baton, in both directions.
//
// Inherited reads the sockets systemd passed by socket activation
// (LISTEN_FDS) exactly once. Notify sends sd_notify messages to systemd
// from baton's own environment. NotifyServer is the other side of that
// protocol: the datagram socket baton's workers report READY=1, STOPPING=1
// and the rest to, with each sender's pid checked through SCM_CREDENTIALS.
//
// The package returns errors and never logs.
package systemd
