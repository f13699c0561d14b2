#!/usr/bin/env bash
# What the suite's own tests need beyond scripts/setup.sh, only what is missing: Debian's chromium (the
# summary opens in it), prometheus-pushgateway (monitoring output is pushed to a real one) and prometheus
# (promtool checks the example alert rules), and the Allure command line from npm in .tools/ (`make report`).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/apt.sh
need_apt=()
have chromium || need_apt+=(chromium)
{ have prometheus-pushgateway || [ -x /usr/bin/prometheus-pushgateway ]; } || need_apt+=(prometheus-pushgateway)
have promtool || need_apt+=(prometheus)
have java || need_apt+=(default-jre-headless)

install_missing "opsverify test setup" "${need_apt[@]}"
# Debian's packages start their services where systemd runs: the tests start their own on free ports.
for service in prometheus prometheus-pushgateway prometheus-node-exporter; do
  if have systemctl && systemctl is-active --quiet "$service" 2>/dev/null; then systemctl stop "$service" || true; fi
done

if [ ! -x .tools/node_modules/.bin/allure ] && have npm; then
  echo "opsverify test setup: installing allure-commandline into .tools/"
  npm install --silent --no-audit --no-fund --prefix .tools allure-commandline >/dev/null
fi
