// Package upgrade hands a running supervisor's descriptors to a new
// process of its executable (a self-upgrade), through
// github.com/cloudflare/tableflip: the Upgrader passes every registered
// descriptor and a note to the successor, which takes the ones it wants
// and says when it is Ready, or why it gives up.
package upgrade
