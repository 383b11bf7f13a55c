#!/usr/bin/env bash
# Installs the Debian packages llamawire needs to build and test, only those missing.
set -euo pipefail
packages=(cmake ninja-build g++ pkg-config
          libboost1.81-dev libboost-program-options1.81-dev libboost-json1.81-dev
          catch2 curl haproxy libssl-dev openssl systemd chromium gnuplot-nox)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
