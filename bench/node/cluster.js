// Node's cluster module running contrib/node/server.js, for the bench:
// WORKERS workers (default 2) on PORT, scheduling SCHED=rr (the primary
// accepts and hands connections out, Node's default) or SCHED=none (the
// workers accept on a shared socket). On SIGHUP it restarts the workers one
// by one, new first: fork, wait until it listens, then SIGTERM the old one
// (which drains), and prints "reloaded" once all are replaced. SIGTERM
// stops it all.
'use strict';

const cluster = require('node:cluster');
const path = require('node:path');

cluster.schedulingPolicy = process.env.SCHED === 'none' ? cluster.SCHED_NONE : cluster.SCHED_RR;
cluster.setupPrimary({ exec: path.join(__dirname, '..', '..', 'contrib', 'node', 'server.js') });

const n = Number(process.env.WORKERS || 2);

function fork() {
  return new Promise((resolve) => {
    const w = cluster.fork();
    w.once('listening', () => resolve(w));
  });
}

async function start() {
  await Promise.all(Array.from({ length: n }, fork));
  console.log(`cluster: ${n} workers listening pid ${process.pid}`);
}

let reloading = false;
async function reload() {
  if (reloading) return;
  reloading = true;
  for (const old of Object.values(cluster.workers)) {
    await fork();
    old.process.kill('SIGTERM');
  }
  reloading = false;
  console.log('reloaded');
}

process.on('SIGHUP', reload);
process.on('SIGTERM', () => {
  for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
  process.exit(0);
});

start();
