// Package excerpt quotes values that came from outside (a configuration
// file, a command line, a control request) in messages. A value is cut
// to a short prefix marked with its length, so that an error, a status
// line or a log line stays short whatever was given: a 10 MB key in a
// configuration file must not become a 10 MB reload answer, kept in the
// status and sent to systemd.
package excerpt
