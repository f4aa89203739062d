# Debian's Chromium for the console's browser tests (tests/console); sourced by scripts/test.
#   ensure_chromium   → installs the chromium package when /usr/bin/chromium is absent
# Playwright drives it (its own browser download is not reachable here). Recommends are left out (xdg and
# perl tools a headless browser never runs), but a font is not: text in the screenshots needs one.

CHROMIUM=/usr/bin/chromium

_browser_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_chromium() {
  [ -x "$CHROMIUM" ] && return 0
  echo "scripts/browser.sh: installing Chromium from Debian's packages" >&2
  _browser_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  _browser_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core fonts-liberation >&2
  "$CHROMIUM" --version >&2
}
