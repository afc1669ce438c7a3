// Package logbuf is the bounded buffer between baton and its standard
// error, so that a slow reader of baton's output (a pipe nobody drains,
// journald under pressure) never stalls baton.
//
// Every line baton writes, its own log lines and the workers' output, goes
// through one Writer. Write copies the line into a fixed-size ring and
// returns at once; one goroutine copies the ring to the real writer, and
// only that goroutine ever waits on it. When the ring is full, the line is
// dropped and counted, never split; as soon as the goroutine has written
// again, it writes one line saying how many were lost. Lines keep their
// order. Lines the real writer fails to take (EPIPE from a pipe whose
// reader has gone) are dropped and counted the same way, without a note,
// which would fail too.
package logbuf
