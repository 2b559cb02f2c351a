#!/usr/bin/env bash
# Installs the load generator and the proxies the benchmark compares olio with
# (Debian packages): wrk, haproxy and nginx. Safe to run again; installs only
# what is missing. Needs root (or sudo) and apt-get.
set -euo pipefail

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)

if [ ${#missing[@]} -eq 0 ]; then
	echo "setup: wrk, haproxy and nginx are installed"
	exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	sudo="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# nginx-light was dropped from newer Debian releases; fall back to nginx.
if ! $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
	fallback=()
	for p in "${missing[@]}"; do
		[ "$p" = nginx-light ] && p=nginx
		fallback+=("$p")
	done
	$sudo apt-get install -y -qq --no-install-recommends "${fallback[@]}"
fi

# The Debian packages start system services where an init system runs; the
# benchmark runs its own instances in the foreground, so stop those if they run.
for svc in haproxy nginx; do
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
		$sudo systemctl stop "$svc" || true
	fi
done

command -v wrk haproxy nginx
