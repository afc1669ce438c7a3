// A baton worker in Node.js (v20, no dependencies): answers every request
// with "hello from pid N" and an X-Pid header, and drains on SIGTERM without
// failing a request of a client that does not retry.
//
// It speaks systemd's socket-activation protocol, so it runs the same under
// baton and under systemd (or systemd-socket-activate):
//
//   baton run --listen http=tcp://127.0.0.1:8080 -- node contrib/node/server.js
//   systemd-socket-activate -l 127.0.0.1:8080 --fdname=http node contrib/node/server.js
//
// Without a socket from either, it listens on $PORT (127.0.0.1), so that
// the bench runs the same code under pm2 and Node's cluster module.
//
// Under baton's worker.balance = "round-robin" (docs/balancing.md) baton
// accepts and passes each connection over Node's own IPC channel
// (NODE_CHANNEL_FD): process.on("message") receives it and
// server.emit("connection") serves it; there is no listener then.
//
// Readiness: Node cannot send sd_notify, because its dgram module has no
// unix datagram sockets. Run it with `ready = "fd"` in baton's [worker]
// section: once serving it writes a line to the descriptor BATON_READY_FD
// names. (`ready = "delay:500ms"` works too; Type=simple or exec under
// plain systemd.)
//
// Drain, on SIGTERM or SIGINT (more of them during the drain are ignored:
// under systemd's default KillMode=control-group a worker gets SIGTERM from
// systemd and from baton at once):
//   1. stop accepting: close this process's copy of the listener. Not with
//      server.close(): since Node 19 that also closes every idle keep-alive
//      connection at once, and a client may be sending its next request on
//      one right then (the keep-alive race). net.Server's close only stops
//      accepting; other workers keep accepting on the shared socket;
//   2. every response from now on carries "Connection: close", so Node ends
//      each connection after its next response;
//   3. a connection idle for IDLE_GRACE_MS (between requests, or accepted
//      and still silent) is closed: a busy client sends its next request
//      long before that and gets it answered;
//   4. exit 0 once no connection is left, or exit 1 at BATON_DRAIN_TIMEOUT
//      (set by baton, a Go duration such as "30s"; default 30s), closing
//      whatever is left.
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');

const IDLE_GRACE_MS = 1000;
const pid = String(process.pid);
const hello = `hello from pid ${pid}\n`;

// parseDuration reads a Go duration ("30s", "1m30s", "500ms"), or returns
// undefined.
function parseDuration(s) {
  const unit = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1e3, m: 60e3, h: 3600e3 };
  if (!s || !/^((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$/.test(s)) return undefined;
  let ms = 0;
  for (const [, n, , , u] of s.matchAll(/(\d+(\.\d*)?|\.\d+)()(ns|us|µs|ms|s|m|h)/g)) ms += Number(n) * unit[u];
  return ms;
}

// listenerFd returns the descriptor of the listener named "http", or the
// first one, per LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID, and removes those
// variables so that no child of this process takes them for its own.
function listenerFd() {
  const { LISTEN_FDS, LISTEN_FDNAMES = '', LISTEN_PID } = process.env;
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_FDNAMES;
  delete process.env.LISTEN_PID;
  if (LISTEN_PID !== pid || !(Number(LISTEN_FDS) >= 1)) {
    throw new Error('node: no inherited listener (LISTEN_FDS unset): run under baton or systemd socket activation');
  }
  const i = LISTEN_FDNAMES.split(':').indexOf('http');
  return 3 + (i >= 0 && i < Number(LISTEN_FDS) ? i : 0);
}

const drainTimeoutMs = parseDuration(process.env.BATON_DRAIN_TIMEOUT) ?? 30e3;

// Per connection: requests in progress, since when it is idle, and how many
// bytes it had read then (more now means a request is arriving).
const conns = new Map();
let draining = false;
let sweepTimer;

const server = http.createServer((req, res) => {
  const st = conns.get(req.socket);
  st.busy++;
  res.on('close', () => {
    st.busy--;
    st.idleSince = Date.now();
    st.bytesAtIdle = req.socket.bytesRead;
    if (draining) scheduleSweep(st.idleSince + IDLE_GRACE_MS);
  });
  res.setHeader('X-Pid', pid);
  if (draining) res.setHeader('Connection', 'close');
  res.end(hello);
});

server.on('connection', (socket) => {
  conns.set(socket, { busy: 0, idleSince: Date.now(), bytesAtIdle: 0 });
  socket.on('close', () => conns.delete(socket));
  if (draining) scheduleSweep(Date.now() + IDLE_GRACE_MS);
});

// sweep closes the connections idle for the grace and schedules itself for
// the next one to be. The window it cannot close: a request still on its way
// from a client that was silent for the whole grace (or one that reached the
// kernel during this turn of the event loop, not read yet). HTTP/1.1 gives a
// server no way to close a connection atomically with a client's write.
function sweep() {
  sweepTimer = undefined;
  const now = Date.now();
  let next = Infinity;
  for (const [socket, st] of conns) {
    if (st.busy > 0 || socket.bytesRead !== st.bytesAtIdle) continue;
    const due = st.idleSince + IDLE_GRACE_MS;
    if (due <= now) socket.destroy();
    else next = Math.min(next, due);
  }
  if (next !== Infinity) scheduleSweep(next);
}

function scheduleSweep(at) {
  if (sweepTimer && sweepTimer.at <= at) return;
  clearTimeout(sweepTimer);
  sweepTimer = setTimeout(sweep, Math.max(0, at - Date.now()));
  sweepTimer.at = at;
}

function force() {
  const n = conns.size;
  for (const socket of conns.keys()) socket.destroy();
  console.error(`node: forced close of ${n} open connections at the ${drainTimeoutMs}ms deadline`);
  process.exit(1);
}

// passed: baton passes this worker the connections of "http"
// (round-robin) over the IPC channel, instead of a listener.
const passed = (process.env.BATON_CONNS_LISTENERS || '').split(':').includes('http') && process.channel !== undefined;
delete process.env.BATON_CONNS_FD;
delete process.env.BATON_CONNS_LISTENERS;
// channelEnded: baton said it passes no more (it shuts its side down
// before it signals this worker).
let channelEnded = !passed;

// ready tells baton this worker serves, with ready = "fd".
function ready() {
  const fd = Number(process.env.BATON_READY_FD);
  delete process.env.BATON_READY_FD;
  if (Number.isInteger(fd) && fd > 2) {
    try {
      fs.writeSync(fd, '\n');
      fs.closeSync(fd);
    } catch (err) {
      console.error(`node: cannot report readiness on fd ${fd}: ${err.message}`);
    }
  }
}

function exitWhenDone() {
  if (draining && channelEnded && conns.size === 0) process.exit(0);
}

function drain(signal) {
  if (draining) return;
  draining = true;
  console.error(`node: draining (${signal}), ${conns.size} connections open`);
  if (passed) {
    // Connections baton passed before it ended the channel are still
    // served; then exit once every connection has ended.
    exitWhenDone();
  } else {
    // Exits once the listener is closed and every connection has ended.
    net.Server.prototype.close.call(server, () => process.exit(0));
  }
  setTimeout(force, drainTimeoutMs).unref();
  sweep();
}

process.on('SIGTERM', drain);
process.on('SIGINT', drain);

if (passed) {
  process.on('message', (m, socket) => {
    if (m && m.cmd === 'BATON_CONN' && m.listener === 'http' && socket) {
      socket.on('close', exitWhenDone);
      server.emit('connection', socket);
    }
  });
  process.on('disconnect', () => {
    channelEnded = true;
    exitWhenDone();
  });
  console.error(`node: serving connections passed by baton pid ${pid}`);
  ready();
} else if (process.env.PORT && !process.env.LISTEN_FDS) {
  // Not under baton: Node's cluster module or pm2 (the bench compares
  // them), listening on PORT; the drain is the same.
  server.listen(Number(process.env.PORT), '127.0.0.1', () => console.error(`node: serving on port ${process.env.PORT} pid ${pid}`));
} else {
  try {
    const fd = listenerFd();
    server.listen({ fd }, () => {
      console.error(`node: serving on fd ${fd} pid ${pid}`);
      ready();
    });
  } catch (err) {
    console.error(err.message);
    process.exit(1);
  }
}
