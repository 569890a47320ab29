#!/usr/bin/env bash
# Debian packages the tests need: Chromium (browser tests, driven by Playwright)
# and newsboat (a real feed reader reading the merged feed). Installs only what is
# missing; needs root or sudo when something is missing.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v newsboat >/dev/null 2>&1 || need+=(newsboat)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "installing Debian packages: ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
