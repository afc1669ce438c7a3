// Package deal deals the new connections of a SO_REUSEPORT group to
// chosen sockets in turn: an eBPF program of type SK_REUSEPORT, written
// out instruction by instruction here, that the kernel runs for each
// connection request the group receives (and for each request waiting on
// a socket that leaves the group, which it moves).
//
// The program has three maps:
//
//   - socks, a REUSEPORT_SOCKARRAY: the group's sockets, each at a key it
//     keeps for its life (the kernel holds a socket in one map at one key
//     only, and removes it when it stops listening);
//   - turns, an array of the keys of the sockets that get connections;
//   - state, one {next, n uint32}: n is how many of turns are in force,
//     next counts the connections dealt.
//
// For each connection it takes next (an atomic fetch-and-add), picks
// turns[next % n] and selects that socket (bpf_sk_select_reuseport). If n
// is 0 or the key holds no socket it selects nothing, and the kernel
// falls back to its hash over the group. Requests that wait on a socket
// that stops listening are dealt the same way to the others
// (BPF_SK_REUSEPORT_SELECT_OR_MIGRATE), whatever net.ipv4.tcp_migrate_req
// says.
//
// Loading it needs CAP_BPF (root, or a unit's AmbientCapabilities);
// callers fall back to something else when New fails.
package deal
