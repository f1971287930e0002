#!/usr/bin/env bash
# Installs everything feedgate and its tests need on a fresh Debian machine (idempotent):
# Debian packages for the test peers, then the project and its Python dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

# ffmpeg: ffprobe, used by the demo check and as a second RTSP viewer.
# postgresql: the shared-deployment store; tests start private clusters from its binaries.
# redis-server: the usage stream when several nodes run; tests start private servers.
# chromium: the finance pages are tested in headless Chromium.
# gstreamer: rtspsrc is a second real RTSP client in the tests; its RTSP server is the fan-out
#   benchmark's peer (run under Debian's python3 with python3-gi).
APT_PACKAGES=(ffmpeg postgresql redis-server chromium
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-libav gir1.2-gst-rtsp-server-1.0 python3-gi)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
"$PY" -m pip install -q --disable-pip-version-check -e '.[dev]'
