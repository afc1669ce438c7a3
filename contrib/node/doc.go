// Package node holds the tests of baton.js (what a Node.js HTTP server
// needs to run under baton) and server.js, the example app that uses it;
// it has no Go code of its own.
package node
