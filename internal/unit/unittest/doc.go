// Package unittest holds what the tests of baton's systemd units share
// (internal/unit's and contrib's): the exposure score `systemd-analyze
// security` gives a unit file, and the most they may have.
package unittest
