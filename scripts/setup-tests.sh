#!/usr/bin/env bash
# What the suite's own tests need beyond scripts/setup.sh, only what is missing: Debian's chromium (the
# summary opens in it), prometheus-pushgateway (monitoring output is pushed to a real one) and prometheus
# (promtool checks the example alert rules), and the Allure command line from npm in .tools/ (`make report`).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
have chromium || need_apt+=(chromium)
{ have prometheus-pushgateway || [ -x /usr/bin/prometheus-pushgateway ]; } || need_apt+=(prometheus-pushgateway)
have promtool || need_apt+=(prometheus)
have java || need_apt+=(default-jre-headless)

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "opsverify test setup: missing system packages; install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
  echo "opsverify test setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Debian's packages start their services where systemd runs: the tests start their own on free ports.
for service in prometheus prometheus-pushgateway prometheus-node-exporter; do
  if have systemctl && systemctl is-active --quiet "$service" 2>/dev/null; then systemctl stop "$service" || true; fi
done

if [ ! -x .tools/node_modules/.bin/allure ] && have npm; then
  echo "opsverify test setup: installing allure-commandline into .tools/"
  npm install --silent --no-audit --no-fund --prefix .tools allure-commandline >/dev/null
fi
