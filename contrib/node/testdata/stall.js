// server.js with a way to stand its own event loop still: GET /stall?ms=N
// says "stall: begins" on stderr, then runs N ms of synchronous work, as a
// large JSON.parse or a long garbage collection would. Other requests are
// answered 10 ms later, as by an app that waits on its database. For
// TestStalledLoopServesWhatArrived.
'use strict';

const http = require('node:http');
const baton = require('../baton');

const server = http.createServer((req, res) => {
  const stall = /^\/stall\?ms=(\d+)$/.exec(req.url);
  if (stall) {
    console.error('stall: begins');
    const until = Date.now() + Number(stall[1]);
    while (Date.now() < until);
    res.end('stalled\n');
    return;
  }
  setTimeout(() => res.end('hello\n'), 10);
});

baton.serve(server);
