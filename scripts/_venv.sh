# Shared by scripts/serve, scripts/test and scripts/lock: a project virtualenv in .venv with
# exactly the versions of requirements/constraints.txt, reinstalled only when pyproject.toml
# or the lock changes.
LOCK=requirements/constraints.txt
ensure_venv() {
  local extras="$1"
  local python="${PYTHON:-python3}"
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "resetflow needs Python 3.11 or newer (found: $("$python" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
    exit 1
  fi
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$python" -m venv .venv
  fi
  local stamp=".venv/.installed${extras:+-$extras}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$LOCK" -nt "$stamp" ]; then
    echo "==> installing resetflow${extras:+ with [$extras]} into .venv (versions from $LOCK)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    # -c: every dependency, direct or not, at the locked version (scripts/lock upgrades them).
    .venv/bin/python -m pip install --quiet -c "$LOCK" -e ".${extras:+[$extras]}"
    touch "$stamp"
  fi
}
