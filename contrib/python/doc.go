// Package python holds the tests of baton.py (the module that serves a
// WSGI app under baton) and server.py (baton's example worker in Python,
// an app on it); it has no Go code of its own.
package python
