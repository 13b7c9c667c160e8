#!/usr/bin/env bash
# Install headless Chromium (Debian's package) when it is missing; the report tests render
# the HTML report with it. scripts/test.sh calls this under CI only.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
echo "== installing chromium (Debian package) for the report rendering tests"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null
