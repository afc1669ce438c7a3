#!/usr/bin/env bash
# Installs what `make bench` needs besides the build's own prerequisites,
# only when missing: gnuplot (Debian) to draw the picture; nginx and
# HAProxy (Debian), measured as the proxy in front; and pm2 (npm), into
# .bench/ (ignored by git), never globally. The bench runs nginx and
# HAProxy with its own configuration, as its own children: their packages'
# services are kept from starting here, and stopped if they did.
set -euo pipefail
cd "$(dirname "$0")/../.."

PM2_VERSION=7.0.4

# need PROGRAM PACKAGE [PIDFILE]: apt-get install PACKAGE unless PROGRAM
# is there. If the package started its service anyway (a policy-rc.d that
# was already there and allows it), end it by its PIDFILE: only a service
# this install started, never a server that was running before.
need() {
	command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] && return 0
	if [ "$(id -u)" != 0 ]; then
		echo "bench-deps: $1 is missing: run as root or apt-get install $2" >&2
		exit 1
	fi
	# A package's postinst starts its service through invoke-rc.d, which
	# asks policy-rc.d first: 101 means "do not start".
	local policy=/usr/sbin/policy-rc.d made=
	if [ ! -e "$policy" ]; then
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		made=1
	fi
	export DEBIAN_FRONTEND=noninteractive
	local ok=1
	apt-get install -y -q "$2" >/dev/null 2>&1 || {
		apt-get update -q >/dev/null && apt-get install -y -q "$2" >/dev/null
	} || ok=
	if [ -n "$made" ]; then
		rm -f "$policy"
		trap - EXIT
	fi
	[ -n "$ok" ] || { echo "bench-deps: apt-get install $2 failed" >&2; exit 1; }
	if [ -n "${3:-}" ] && [ -s "$3" ]; then
		start-stop-daemon --stop --quiet --retry TERM/5/KILL/5 --pidfile "$3" || true
	fi
}

need gnuplot gnuplot-nox
need nginx nginx /run/nginx.pid
need haproxy haproxy /run/haproxy.pid

# Read from its package: `pm2 --version` would start a daemon in ~/.pm2.
have=$(node -p "require('./.bench/node_modules/pm2/package.json').version" 2>/dev/null || true)
if [ "$have" != "$PM2_VERSION" ]; then
	mkdir -p .bench
	npm install --prefix .bench --no-audit --no-fund --loglevel=error "pm2@$PM2_VERSION" >/dev/null
fi
