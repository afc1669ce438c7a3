#!/usr/bin/env bash
# Installs what `make bench` needs besides the build's own prerequisites,
# only when missing: gnuplot (Debian) to draw the picture, and pm2 (npm),
# the peer measured beside baton, into .bench/ (ignored by git), never
# globally.
set -euo pipefail
cd "$(dirname "$0")/../.."

PM2_VERSION=7.0.4

if ! command -v gnuplot >/dev/null; then
	if [ "$(id -u)" != 0 ]; then
		echo "bench-deps: gnuplot is missing: run as root or apt-get install gnuplot-nox" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q gnuplot-nox >/dev/null 2>&1 || {
		apt-get update -q >/dev/null
		apt-get install -y -q gnuplot-nox >/dev/null
	}
fi

# Read from its package: `pm2 --version` would start a daemon in ~/.pm2.
have=$(node -p "require('./.bench/node_modules/pm2/package.json').version" 2>/dev/null || true)
if [ "$have" != "$PM2_VERSION" ]; then
	mkdir -p .bench
	npm install --prefix .bench --no-audit --no-fund --loglevel=error "pm2@$PM2_VERSION" >/dev/null
fi
