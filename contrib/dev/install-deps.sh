#!/usr/bin/env bash
# Installs what building and testing baton needs on a Debian machine, only
# when it is missing, so it is cheap to run before every build or test.
set -euo pipefail

need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v systemd-socket-activate >/dev/null || need+=(systemd)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v node >/dev/null || need+=(nodejs)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v make >/dev/null || need+=(make)
# An HTTP/2 load that retries nothing (integration/h2load_test.go).
command -v h2load >/dev/null || need+=(nghttp2-client)
# The real servers the suite runs under baton (docs/languages.md), for
# Debian's own interpreter (another python3 may come first in $PATH).
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import gunicorn' 2>/dev/null || need+=(python3-gunicorn)
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import uvicorn' 2>/dev/null || need+=(python3-uvicorn)
# Puma, and the gem a stock Puma reports readiness on NOTIFY_SOCKET with.
command -v puma >/dev/null || need+=(puma)
command -v ruby >/dev/null && ruby -e 'require "sd_notify"' 2>/dev/null || need+=(ruby-sd-notify)

if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "install-deps: missing ${need[*]}: run as root or install them with apt-get" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || {
		apt-get update -q >/dev/null
		apt-get install -y -q "${need[@]}" >/dev/null
	}
fi

# promtool checks /metrics and contrib/prometheus (integration/prometheus_test.go).
# Debian ships it only inside the Prometheus server's package, whose install
# would start a server on port 9090: promtool alone is taken out of it.
if ! command -v promtool >/dev/null; then
	if [ "$(id -u)" != 0 ]; then
		echo "install-deps: missing promtool: run as root, or put Prometheus' promtool in \$PATH" >&2
		exit 1
	fi
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && { apt-get download -q prometheus >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get download -q prometheus >/dev/null; }; })
	dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool
	install -m 0755 "$tmp/usr/bin/promtool" /usr/local/bin/promtool
fi

if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then
	echo "install-deps: Go is missing: install Go 1.26 or newer (see go.mod) into /usr/local/go" >&2
	exit 1
fi
