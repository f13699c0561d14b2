#!/usr/bin/env bash
# Install what opsverify needs, only what is missing: Debian packages (redis-server,
# PostgreSQL 15 server binaries, openssh-server, iproute2, procps, pigz for the gzip benchmark, gcc for a
# self-test) and a virtualenv in .venv
# with the project and its dev tools. Idempotent and quick when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

. scripts/apt.sh
need_apt=()
pg_bin() { ls /usr/lib/postgresql/*/bin/"$1" >/dev/null 2>&1 || have "$1"; }

have redis-server || need_apt+=(redis-server)
{ pg_bin initdb && pg_bin pg_ctl && have pg_dump && have psql; } || need_apt+=(postgresql)
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
have ip || need_apt+=(iproute2)
have ps || need_apt+=(procps)
have pigz || need_apt+=(pigz)  # the gzip benchmark's peer (`pigz -t`)
# a C compiler: the self-tests build a tiny preload that starts redis-server "days ago" (libfaketime hangs it: jemalloc)
have cc || need_apt+=(gcc libc6-dev)
# runuser (in /usr/sbin, outside a normal user's PATH) is needed only as root, to run PostgreSQL as postgres
[ "$(id -u)" -ne 0 ] || have runuser || [ -x /usr/sbin/runuser ] || need_apt+=(util-linux)

install_missing "opsverify setup" "${need_apt[@]}"
# Debian starts no services inside containers, but make sure a packaged redis does not hold a port.
if have systemctl && systemctl is-active --quiet redis-server 2>/dev/null; then
  systemctl stop redis-server || true
fi

stamp="$VENV/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "opsverify setup: creating $VENV (python package and dev tools)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location .* is ignored" || true; }; }
  quiet "$VENV/bin/python" -m pip install -q --upgrade pip
  quiet "$VENV/bin/python" -m pip install -q -e ".[dev,sandbox]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
