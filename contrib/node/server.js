// A baton worker in Node.js (Node 18 or newer, no dependencies): an
// ordinary http.createServer app that answers every request with
// "hello from pid N" and an X-Pid header, run through baton.js, which
// takes the socket baton (or systemd) passed, reports readiness and
// drains on SIGTERM without failing a request of a client that does not
// retry:
//
//   baton run --listen http=tcp://127.0.0.1:8080 --ready fd -- node contrib/node/server.js
//   systemd-socket-activate -l 127.0.0.1:8080 --fdname=http node contrib/node/server.js
//
// Under baton's worker.balance = "round-robin" baton passes the
// connections over Node's own IPC channel instead (baton.js serves them).
// With `ready = "fd"` it reports readiness on BATON_READY_FD; Node cannot
// send sd_notify (its dgram module has no unix datagram sockets), so
// `ready = "notify"` would never see it ready. Without a socket from
// either it listens on $PORT (127.0.0.1): the bench runs this same code
// under pm2 and Node's cluster module.
'use strict';

const http = require('node:http');
const baton = require('./baton');

const pid = String(process.pid);
const hello = `hello from pid ${pid}\n`;

const server = http.createServer((req, res) => {
  res.setHeader('X-Pid', pid);
  res.end(hello);
});

baton.serve(server);
