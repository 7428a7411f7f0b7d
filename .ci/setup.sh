#!/usr/bin/env bash
# Create the project's virtualenv once (./.venv) and reuse it; reinstall only when setup.cfg changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
stamp="$VENV/.fhe-credit-sim-installed"
want="$(sha256sum setup.cfg pyproject.toml .ci/pyzmq/build.py | sha256sum | cut -c1-16)"
# The web page's browser test (tests/test_web_ui.py) drives Debian's Chromium through Debian's chromedriver; selenium
# is given /usr/bin/chromedriver and never downloads a browser. Installed here when missing and run as root, with
# Debian's colour emoji font (the page's ✅ and ❌ are empty boxes without one).
# pyzmq is built here with its bundled libzmq patched (.ci/pyzmq/build.py: an authenticated peer could abort any role),
# its CURVE on Debian's libsodium (libsodium-dev; without it libzmq's slower tweetnacl) and g++.
EMOJI_FONT=/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || [ ! -f /usr/include/sodium.h ] \
     || [ ! -f "$EMOJI_FONT" ]; } && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium, chromium-driver, fonts-noto-color-emoji (the web page's browser test) and" \
    "libsodium-dev (CURVE)" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver \
    fonts-noto-color-emoji libsodium-dev g++ >/dev/null
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV with $($PYTHON --version)" >&2
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing fhe-credit-sim and its pinned dependencies into $VENV (first time: a few minutes, ~6 GB)" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" .ci/pyzmq/build.py "$VENV/bin/python"   # before the rest: pip then keeps this pyzmq 25.1.2
  "$VENV/bin/python" -m pip install --quiet -e '.[test]'
  "$VENV/bin/python" .ci/pyzmq/build.py "$VENV/bin/python"   # a no-op unless something replaced it
  echo "$want" > "$stamp"
fi
