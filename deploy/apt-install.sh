#!/usr/bin/env bash
# Install the Debian packages named as arguments, skipping those already present.
# Uses sudo when not root; says what to do when neither works.
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "dialswitch: installing Debian packages: ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "dialswitch: please install these Debian packages as root: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
  $SUDO apt-get update -q >&2 || true
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || {
    echo "dialswitch: apt-get could not install: ${missing[*]}. Check your apt sources and network." >&2
    exit 1
  }
fi
