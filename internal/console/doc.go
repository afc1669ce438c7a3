// Package console renders a running baton's state for a terminal: the
// status table of `baton status`, in the shape pm2 users know.
package console
