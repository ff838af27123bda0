#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# apt-get install ./*.deb in a throwaway copy of this machine, then the README's checks, then
# apt-get remove (ctest: packaging_apt_install, label packaging):
#
#   packaging/apt-install-check.sh DEB_DIR
#
# Runs in a private mount namespace: an overlay over / with its writable layer on a tmpfs, entered
# with chroot, so nothing of the real system changes and it all disappears on exit. There:
# apt-get install ./*.deb (every dependency must be installable: already installed or in apt's
# sources), `gst-inspect-1.0 resnetbackbone` and README.md's pipeline with no environment set,
# pkg-config, backbone-infer and the Python module (when packaged), then apt-get remove --purge and
# a check that the files are gone.
# Needs root and mount namespaces; exits 77 (ctest: skipped) without them.
set -euo pipefail
debs=$(cd "$1" && pwd)
[ "$(id -u)" = 0 ] || { echo "apt-install-check: skipped: needs root"; exit 77; }
command -v unshare > /dev/null || { echo "apt-install-check: skipped: no unshare"; exit 77; }
ls "$debs"/*.deb > /dev/null

scratch=$(mktemp -d /tmp/backbone-apt-check.XXXXXX)
trap 'rmdir "$scratch" 2> /dev/null || true' EXIT
packages=$(for d in "$debs"/*.deb; do dpkg-deb -f "$d" Package; done | tr '\n' ' ')

unshare --mount --propagation private bash -s "$scratch" "$debs" "$packages" <<'INNER'
set -euo pipefail
scratch=$1 debs=$2 packages=$3
skip() { echo "apt-install-check: skipped: $*"; exit 77; }
mount -t tmpfs tmpfs "$scratch" || skip "cannot mount a tmpfs (no CAP_SYS_ADMIN?)"
mkdir -p "$scratch/up" "$scratch/work" "$scratch/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$scratch/up,workdir=$scratch/work" "$scratch/root" \
  || skip "cannot mount an overlay over /"
root=$scratch/root
[ -x "$root/usr/bin/apt-get" ] || skip "/usr is not on the root file system"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mkdir -p "$root/debs" && cp "$debs"/*.deb "$root/debs/"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2> /dev/null || true
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp/home DEBIAN_FRONTEND=noninteractive \
  PACKAGES="$packages" /bin/bash -s <<'CHROOT'
set -euo pipefail
fail() { echo "apt-install-check: FAILED: $*" >&2; exit 1; }
mkdir -p "$HOME" && cd /debs
echo "== apt-get install ./*.deb"
apt-get install -y ./*.deb > apt-install.log 2>&1 || { cat apt-install.log; fail "apt-get install ./*.deb"; }
grep -E "newly installed|^Setting up" apt-install.log
for p in $PACKAGES; do
  [ "$(dpkg-query -W -f='${Status}' "$p")" = "install ok installed" ] || fail "$p is not installed"
done
echo "== gst-inspect-1.0 resnetbackbone (no GST_PLUGIN_PATH)"
gst-inspect-1.0 resnetbackbone > inspect.txt || { cat inspect.txt; fail "gst-inspect-1.0 resnetbackbone"; }
grep -E "^ *Filename +(/usr)?/lib/[a-z0-9_-]+/gstreamer-1.0/libgstbackbone.so$" inspect.txt || fail "plugin not from the system folder"
echo "== README.md's pipeline"
gst-launch-1.0 -e videotestsrc num-buffers=10 ! video/x-raw,width=320,height=240 \
  ! resnetbackbone config-file=/usr/share/backbone/configs/R-50.yaml ! featuresink location=features \
  > launch.log 2>&1 || { cat launch.log; fail "README pipeline"; }
grep -q '"frames": 10,' features/index.json || fail "README pipeline wrote no 10 frames"
ls features
echo "pkg-config: backbone $(pkg-config --modversion backbone), gstreamer-featuremeta-1.0 $(pkg-config --modversion gstreamer-featuremeta-1.0)"
backbone-infer --help > /dev/null || fail "backbone-infer --help"
case " $PACKAGES " in
  *" python3-gstfeaturemeta "*)
    echo "== python3: gstfeaturemeta.levels() (no PYTHONPATH, no GI_TYPELIB_PATH)"
    python3 - > python.log 2>&1 <<'PY' || { cat python.log; fail "python3 gstfeaturemeta"; }
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
import gstfeaturemeta
Gst.init(None)
p = Gst.parse_launch("videotestsrc num-buffers=1 ! video/x-raw,width=64,height=64 ! resnetbackbone "
                     "config-file=/usr/share/backbone/configs/R-50.yaml ! appsink name=sink")
p.set_state(Gst.State.PLAYING)
feats = gstfeaturemeta.levels(p.get_by_name("sink").emit("pull-sample"))
p.set_state(Gst.State.NULL)
print(gstfeaturemeta.__file__, {k: list(a.shape) for k, a in feats.items()})
assert list(feats) == ["res2", "res3", "res4", "res5"], feats.keys()
PY
    cat python.log
    grep -q "^/usr/lib/python3/dist-packages/gstfeaturemeta/__init__.py " python.log || fail "gstfeaturemeta not from dist-packages"
    ;;
esac
echo "== apt-get remove --purge"
# shellcheck disable=SC2086
apt-get remove -y --purge $PACKAGES > apt-remove.log 2>&1 || { cat apt-remove.log; fail "apt-get remove"; }
for p in $PACKAGES; do
  if dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q installed; then fail "$p still installed"; fi
done
for f in /usr/share/backbone /usr/include/backbone /usr/include/gstreamer-1.0/gst/featuremeta \
    /usr/lib/python3/dist-packages/gstfeaturemeta /usr/share/gir-1.0/GstFeatureMeta-1.0.gir; do
  [ ! -e "$f" ] || fail "$f left after removal"
done
if ls /usr/lib/*/libbackbone* /usr/lib/*/libgstfeaturemeta* /usr/lib/*/gstreamer-1.0/libgstbackbone.so \
    /usr/lib/*/girepository-1.0/GstFeatureMeta-1.0.typelib \
    /usr/lib/*/cmake/Backbone /usr/bin/backbone-infer 2> /dev/null; then fail "files left after removal"; fi
echo "apt-install-check: passed"
CHROOT
INNER
