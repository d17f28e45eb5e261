#!/usr/bin/env bash
# Install Debian's Prometheus, Pushgateway and Alertmanager (with promtool and amtool)
# when they are missing, without letting the packages start their daemons: tests start
# their own instances on loopback with temporary directories.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || need+=(prometheus-pushgateway)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # the HTTPS driver test's certificate
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the report test opens its HTML headless
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "setup-stack: need root to install ${need[*]}; tests that use them will be skipped" >&2
    exit 0
  fi
else
  SUDO=
fi

# The packages' install scripts start the daemons through invoke-rc.d on 0.0.0.0;
# a policy-rc.d that exits 101 forbids that. Only remove it if we created it.
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  made_policy=1
fi
trap '[ $made_policy -eq 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d' EXIT

echo "setup-stack: installing ${need[*]}" >&2
$SUDO apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
# Belt and braces: if anything did start, stop it (they would hold the default ports).
for d in prometheus prometheus-pushgateway prometheus-alertmanager; do
  pkill -x "$d" 2>/dev/null || true
done
