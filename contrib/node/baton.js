// baton.js: what a Node.js HTTP server needs to run under baton (Node 18 or
// newer, no dependencies). An existing app adds two lines:
//
//   const baton = require('./baton');            // this file
//   baton.serve(server);                         // instead of server.listen(...)
//
// serve(server, {name}) takes the listener baton (or systemd) passed under
// name ("http" by default), or, under worker.balance = "round-robin", the
// connections baton passes over Node's own IPC channel; without either it
// listens on $PORT (127.0.0.1), so the same app runs under pm2 or Node's
// cluster module. Once serving it tells baton so on the descriptor
// BATON_READY_FD names (worker.ready = "fd"). With Express, pass the
// server it runs on: baton.serve(http.createServer(app)).
//
// Drain, on SIGTERM or SIGINT (more of them during the drain are ignored:
// under systemd's default KillMode=control-group a worker gets SIGTERM from
// systemd and from baton at once):
//   1. stop accepting: close this process's copy of the listener. Not with
//      server.close(): since Node 19 that also closes every idle keep-alive
//      connection at once, and a client may be sending its next request on
//      one right then (the keep-alive race). net.Server's close only stops
//      accepting; other workers keep accepting on the shared socket. Under
//      round-robin, connections baton passed before it ended the channel
//      are still served;
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
const net = require('node:net');

const IDLE_GRACE_MS = 1000;
const pid = String(process.pid);

// parseDuration reads a Go duration ("30s", "1m30s", "500ms"), or returns
// undefined.
function parseDuration(s) {
  const unit = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1e3, m: 60e3, h: 3600e3 };
  if (!s || !/^((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$/.test(s)) return undefined;
  let ms = 0;
  for (const [, n, , , u] of s.matchAll(/(\d+(\.\d*)?|\.\d+)()(ns|us|µs|ms|s|m|h)/g)) ms += Number(n) * unit[u];
  return ms;
}

// inherited returns the descriptor of the listener named name, or of the
// only one, per LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID (undefined if none),
// and removes those variables so that no child of this process takes them
// for its own.
function inherited(name) {
  const { LISTEN_FDS, LISTEN_FDNAMES = '', LISTEN_PID } = process.env;
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_FDNAMES;
  delete process.env.LISTEN_PID;
  const n = Number(LISTEN_FDS);
  if (LISTEN_PID !== pid || !(n >= 1)) return undefined;
  const i = LISTEN_FDNAMES.split(':').indexOf(name);
  if (i >= 0 && i < n) return 3 + i;
  return n === 1 ? 3 : undefined;
}

// ready tells baton this worker serves, with worker.ready = "fd".
function ready() {
  const fd = Number(process.env.BATON_READY_FD);
  delete process.env.BATON_READY_FD;
  if (!Number.isInteger(fd) || fd <= 2) return;
  try {
    fs.writeSync(fd, '\n');
    fs.closeSync(fd);
  } catch (err) {
    console.error(`node: cannot report readiness on fd ${fd}: ${err.message}`);
  }
}

// serve runs server (an http.Server) under baton until a stop signal, then
// drains it as the file's comment says, and exits.
function serve(server, { name = 'http' } = {}) {
  const drainTimeoutMs = parseDuration(process.env.BATON_DRAIN_TIMEOUT) ?? 30e3;
  // passed: baton passes this worker the connections of name
  // (round-robin) over the IPC channel, instead of a listener.
  const passed = (process.env.BATON_CONNS_LISTENERS || '').split(':').includes(name) && process.channel !== undefined;
  delete process.env.BATON_CONNS_FD;
  delete process.env.BATON_CONNS_LISTENERS;
  // channelEnded: baton said it passes no more (it shuts its side down
  // before it signals this worker).
  let channelEnded = !passed;

  // Per connection: requests in progress, since when it is idle, and how
  // many bytes it had read then (more now means a request is arriving).
  const conns = new Map();
  let draining = false;
  let sweepTimer;

  // Before the app's own handler: the drain's header, and the bookkeeping.
  server.prependListener('request', (req, res) => {
    const st = conns.get(req.socket);
    if (st) {
      st.busy++;
      res.on('close', () => {
        st.busy--;
        st.idleSince = Date.now();
        st.bytesAtIdle = req.socket.bytesRead;
        if (draining) scheduleSweep(st.idleSince + IDLE_GRACE_MS);
      });
    }
    if (draining) res.setHeader('Connection', 'close');
  });

  server.on('connection', (socket) => {
    conns.set(socket, { busy: 0, idleSince: Date.now(), bytesAtIdle: 0 });
    socket.on('close', () => {
      conns.delete(socket);
      exitWhenDone();
    });
    if (draining) scheduleSweep(Date.now() + IDLE_GRACE_MS);
  });

  // sweep closes the connections idle for the grace and schedules itself
  // for the next one to be. The window it cannot close: a request still
  // on its way from a client that was silent for the whole grace (or one
  // that reached the kernel during this turn of the event loop, not read
  // yet). HTTP/1.1 gives a server no way to close a connection atomically
  // with a client's write. What arrived while the event loop stood still
  // is read first: libuv runs signal handlers last in each turn.
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

  // listening: the listener is still open (it is closed at the drain).
  let listening = false;
  function exitWhenDone() {
    if (draining && channelEnded && !listening && conns.size === 0) process.exit(0);
  }

  function drain(signal) {
    if (draining) return;
    draining = true;
    console.error(`node: draining (${signal}), ${conns.size} connections open`);
    if (listening) {
      // Exits once the listener is closed and every connection has ended.
      net.Server.prototype.close.call(server, () => {
        listening = false;
        exitWhenDone();
      });
    }
    exitWhenDone();
    setTimeout(force, drainTimeoutMs).unref();
    sweep();
  }

  process.on('SIGTERM', drain);
  process.on('SIGINT', drain);

  if (passed) {
    process.on('message', (m, socket) => {
      if (m && m.cmd === 'BATON_CONN' && m.listener === name && socket) server.emit('connection', socket);
    });
    process.on('disconnect', () => {
      channelEnded = true;
      exitWhenDone();
    });
    console.error(`node: serving connections passed by baton pid ${pid}`);
    ready();
    return;
  }
  const fd = inherited(name);
  const where = fd !== undefined ? { fd } : process.env.PORT ? { port: Number(process.env.PORT), host: '127.0.0.1' } : undefined;
  if (!where) {
    console.error('node: no inherited listener (LISTEN_FDS unset) and no PORT: run under baton or systemd socket activation');
    process.exit(1);
  }
  listening = true;
  server.listen(where, () => {
    console.error(`node: serving on ${fd !== undefined ? `fd ${fd}` : `port ${where.port}`} pid ${pid}`);
    ready();
  });
}

module.exports = { serve, parseDuration };
