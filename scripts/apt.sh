# Sourced by scripts/setup.sh and scripts/setup-tests.sh: `have CMD`, and `install_missing WHO PKG...`, which installs
# the Debian packages named (as root), or prints the command that would (not root) and exits 1.
have() { command -v "$1" >/dev/null 2>&1; }

install_missing() {
  local who=$1
  shift
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "$who: missing system packages; install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y $*" >&2
    exit 1
  fi
  echo "$who: installing $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
