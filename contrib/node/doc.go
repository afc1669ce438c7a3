// Package node holds the tests of server.js, baton's example worker in
// Node.js; it has no Go code of its own.
package node
