#!/usr/bin/env bash
# make report [RUN=reports/<run>]: render a run's allure-results (default: the newest, reports/latest) into ONE
# self-contained HTML file, <run>/allure-report.html, with the Allure command line and the machine's Java.
# Allure: .tools/ (scripts/setup-tests.sh: npm install --prefix .tools allure-commandline), else `allure` on PATH.
# Exit 0 written, 1 no allure-results (or allure failed), 2 Allure or Java missing (the line says how to get it).
set -uo pipefail
cd "$(dirname "$0")/.."

run="${1:-reports/latest}"
results="$run/allure-results"
if [ ! -d "$results" ] || [ -z "$(ls -A "$results" 2>/dev/null)" ]; then
  echo "make report: no Allure results in $results: run the checks first (make demo), or name a run: make report RUN=reports/<run>" >&2
  exit 1
fi
run_dir="$(readlink -f "$run")"

allure=""
for candidate in .tools/node_modules/allure-commandline/dist/bin/allure .tools/node_modules/.bin/allure; do
  if [ -x "$candidate" ]; then allure="$PWD/$candidate"; break; fi
done
if [ -z "$allure" ] && command -v allure >/dev/null 2>&1; then allure="$(command -v allure)"; fi
java=""
if [ -n "${JAVA_HOME:-}" ] && [ ! -x "$JAVA_HOME/bin/java" ]; then unset JAVA_HOME; fi  # allure would refuse it
if [ -n "${JAVA_HOME:-}" ]; then java="$JAVA_HOME/bin/java"
elif command -v java >/dev/null 2>&1; then java="$(command -v java)"; fi

missing=0
if [ -z "$allure" ]; then
  echo "make report: the Allure command line is not installed: npm install --prefix .tools allure-commandline" >&2
  missing=1
fi
if [ -z "$java" ]; then
  echo "make report: Allure needs Java, which is not installed: apt-get install default-jre-headless" >&2
  missing=1
fi
[ "$missing" -eq 0 ] || exit 2

export ALLURE_NO_ANALYTICS=true  # no Google Analytics script in the report (it must open offline), no call home
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! timeout 300 "$allure" generate --single-file --clean -o "$tmp/report" "$results" >"$tmp/log" 2>&1 \
    || [ ! -f "$tmp/report/index.html" ]; then
  echo "make report: allure generate failed on $results: $(grep -v '^\s*$' "$tmp/log" | tail -1)" >&2
  exit 1
fi
mv "$tmp/report/index.html" "$run_dir/allure-report.html"
echo "allure report: $run_dir/allure-report.html"
