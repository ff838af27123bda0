#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the project and runs its whole test suite (ctest) on Debian 13 "trixie" (GStreamer 1.26,
# LibTorch 2.6, oneDNN 3.x, OpenCV 4.10, GCC 14), from a Debian 12 (or any Debian) host, as root.
#
#   tests/debian13/run.sh              build and run the whole test suite (./setup.sh test)
#   tests/debian13/run.sh COMMAND...   run COMMAND in /src inside the root instead, after the root
#                                      is made (e.g. bash, or: ninja -C /var/cache/gst-backbone/build -k 0)
#
# The first run makes a minimal Debian 13 root with mmdebstrap from Debian's archive; setup.sh then
# runs inside it (chroot, in a private mount namespace): it installs the build dependencies with
# apt-get, builds the project into a build directory kept inside the root, and runs ctest on the
# source tree, bind-mounted read-write at /src. The root, its downloaded packages and the build are
# cached, so a later run only installs new packages and rebuilds what changed.
#
# Environment:
#   DEBIAN13_CACHE   where the root lives (default: ${XDG_CACHE_HOME:-~/.cache}/gst-backbone/debian13)
#   DEBIAN13_MIRROR  Debian archive (default: http://deb.debian.org/debian)
#   DEBIAN13_FRESH=1 remove the cached root first (a run from scratch)
#   JOBS             build and test parallelism (default: number of cores)
#   CMAKE_ARGS       extra arguments for the first configure inside the root
# Needs: root, mmdebstrap (apt-get install mmdebstrap), unshare and chroot (util-linux, coreutils).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
cache=${DEBIAN13_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gst-backbone/debian13}
mirror=${DEBIAN13_MIRROR:-http://deb.debian.org/debian}
root=$cache/root
jobs=${JOBS:-$(nproc)}

if [ "$(id -u)" != 0 ]; then
  echo "run.sh: expected to run as root (mmdebstrap, chroot and mounts), found uid $(id -u)" >&2
  exit 2
fi
command -v mmdebstrap >/dev/null || { echo "run.sh: expected mmdebstrap on PATH (apt-get install mmdebstrap)" >&2; exit 2; }

start=$(date +%s)
stamp() { echo "run.sh: $1 after $(( $(date +%s) - start )) s"; }

if [ "${DEBIAN13_FRESH:-0}" = 1 ]; then
  rm -rf "$root"
fi
if [ ! -f "$root/.gst-backbone-base" ]; then
  rm -rf "$root"
  mkdir -p "$cache"
  # A minimal root (apt and its dependencies); setup.sh installs the rest. Downloaded .debs stay in
  # the root's apt cache for later runs.
  mmdebstrap --variant=apt --mode=root \
    --aptopt='APT::Keep-Downloaded-Packages "true"' \
    --customize-hook='rm -f "$1"/etc/apt/apt.conf.d/docker-clean' \
    trixie "$root" "$mirror"
  touch "$root/.gst-backbone-base"
  stamp "Debian 13 root made in $root"
fi
mkdir -p "$root/src" "$root/var/cache/gst-backbone"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true

# Inside: a private mount namespace, so the mounts go away with the process whatever happens.
# shellcheck disable=SC2016
unshare --mount --propagation private -- /bin/sh -ec '
  root=$1 src=$2 jobs=$3 cmake_args=$4
  shift 4
  [ $# -gt 0 ] || set -- ./setup.sh test
  mount --rbind /dev "$root/dev"
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  mount -t tmpfs tmpfs "$root/tmp"
  mount --bind "$src" "$root/src"
  exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 BUILD_DIR=/var/cache/gst-backbone/build JOBS="$jobs" CMAKE_ARGS="$cmake_args" \
    /bin/bash -c "cd /src && exec \"\$@\"" bash "$@"
' run.sh "$root" "$src" "$jobs" "${CMAKE_ARGS:-}" "$@"
if [ $# -eq 0 ]; then
  stamp "build and whole test suite passed on Debian 13"
fi
