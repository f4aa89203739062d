# The project's virtualenv, installed once and again only when pyproject.toml changes, so that
# starting the service needs no package registry after the first install. Sourced by scripts/serve and scripts/test.
#   ensure_venv [EXTRAS]   e.g. ensure_venv test (an install with the test extras serves plain use too)

ensure_venv() {
  local extras=${1:-}
  local spec=. hash installed
  [ -n "$extras" ] && spec=".[$extras]"
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  hash=$(sha256sum pyproject.toml | cut -c1-64)
  installed=$(cat .venv/.chainloom-installed 2>/dev/null || true)
  case "$installed" in
    "$hash $extras"|"$hash test") [ -x .venv/bin/chainloom ] && return 0 ;;
  esac
  .venv/bin/python -m pip install --quiet -e "$spec"
  echo "$hash $extras" > .venv/.chainloom-installed
}
