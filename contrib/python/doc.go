// Package python holds the tests of server.py, baton's example worker in
// Python; it has no Go code of its own.
package python
