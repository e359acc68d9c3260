#!/usr/bin/env bash
# Installs the real Backstage harness in this directory (npm ci from
# package-lock.json) unless node_modules already matches the lock file. The
# stamp and the lock file are the ones backstagetest.Install uses, so the Go
# tests and the Backstage module's tests share one install.
set -euo pipefail
cd "$(dirname "$0")"
want=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.portbridge-lock-sha256
installed() { [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; }
installed && exit 0
exec 9>.install.lock
flock 9
installed && exit 0
npm_config_nodedir="${npm_config_nodedir:-/usr}" npm ci --no-audit --no-fund
printf %s "$want" > "$stamp"
