// Package linering keeps the workers' last output lines for `baton logs`:
// a ring bounded in bytes, whose lines are each cut at a limit, and
// followers that get every new line without ever holding up the writer
// (a follower that does not keep up loses lines, and is told how many).
package linering
