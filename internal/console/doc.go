// Package console renders a running baton's state for a terminal: the
// status table of `baton status`, in the shape pm2 users know, and
// Printable, which every text from a worker or a socket goes through on
// its way to a terminal (the table, `baton logs`, errors).
package console
