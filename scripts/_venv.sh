# Sourced by scripts/serve and scripts/test: a virtualenv with the locked dependencies.
# Usage: source scripts/_venv.sh LOCKFILE
# Sets ROOT and VENV. Installs only when the lock or pyproject.toml changed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="${BRIDGE_VENV:-$ROOT/.venv}"
LOCK="$ROOT/$1"

as_root() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

if [ ! -x "$VENV/bin/python" ]; then
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    if as_root; then
      # Debian ships venv/ensurepip separately from python3.
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$VENV"
    else
      echo "python3 -m venv failed; install it first: sudo apt-get install python3-venv" >&2
      exit 1
    fi
  fi
fi

stamp="$VENV/.installed-$(cat "$LOCK" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "installing $(basename "$LOCK") into $VENV ..." >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r "$LOCK"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$ROOT"
  touch "$stamp"
fi
