// Package config turns baton's TOML file and command-line flags into one
// validated Config.
//
// The file is decoded strictly (an unknown key is an error naming the key and
// its line), flags override the file key by key, and Validate checks the
// merged value once. Every error names the thing at fault: the key and the
// file line it came from, or the flag that set it. Defaults are filled in by
// Validate, so a Config that passed it can be used as it is.
package config
