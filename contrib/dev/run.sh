#!/usr/bin/env bash
# make run: baton with the demo worker on 127.0.0.1:PORT, and, once it
# serves, what to try next with the real pids filled in.
set -uo pipefail
port=${1:-8080}
workers=${2:-}

bin/baton run --listen "http=tcp://127.0.0.1:$port" ${workers:+--workers "$workers"} -- bin/hello &
baton=$!
# Ctrl-C reaches baton itself (the terminal signals the whole group): it
# drains its workers and exits; this script only waits for that. A
# SIGTERM to this script alone is passed on.
trap '' INT
trap 'kill -TERM "$baton" 2>/dev/null' TERM

# Wait until it serves: `baton status` lists its first workers ready.
for _ in $(seq 1 600); do
	if status=$(bin/baton status --pid "$baton" 2>/dev/null) && grep -q ' running ' <<<"$status"; then
		break
	fi
	kill -0 "$baton" 2>/dev/null || break
	sleep 0.1
done
worker=$(awk 'NR == 3 { print $2 }' <<<"${status:-}")
if [ -n "$worker" ]; then
	cat <<EOT
baton (pid $baton): serving the demo worker on http://127.0.0.1:$port/ -- try, in another terminal:
  curl -i http://127.0.0.1:$port/          # 'hello from pid N': run it twice, see the pids change
  bin/baton status                         # baton and its workers: pid, generation, state, uptime, restarts, cpu, memory
  bin/baton logs -f                        # the workers' output, as it comes
$(printf '  %-40s # a worker: baton replaces it, no connection is refused' "kill -9 $worker")
  bin/baton reload                         # a new generation of workers, then the old one drains
  bin/baton scale 4                        # four workers (the new ones are waited for)
  (more than one baton of yours running? name this one: bin/baton reload --pid $baton)
  Ctrl-C here                              # baton drains every worker and exits 0
EOT
fi
while kill -0 "$baton" 2>/dev/null; do
	wait "$baton"
	code=$?
done
exit "${code:-1}"
