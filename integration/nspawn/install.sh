#!/bin/sh
# install.sh makes systemd-nspawn available (Debian package systemd-container).
# Idempotent: does nothing when systemd-nspawn is already installed. The package
# index is refreshed only when the first install attempt fails.
set -eu
if command -v systemd-nspawn >/dev/null 2>&1; then
	exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y systemd-container; then
	apt-get update
	apt-get install -y systemd-container
fi
command -v systemd-nspawn >/dev/null 2>&1
