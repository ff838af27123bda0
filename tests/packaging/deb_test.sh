#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Debian package test (ctest: packaging_debs, label packaging): builds the .deb files with cpack,
# checks their names, versions, architectures and Depends, that no file is in two packages and
# that together they hold exactly what cmake --install lays out; then unpacks every package but
# the CUDA module with dpkg -x into a scratch root (a machine without CUDA) and runs
# gst-inspect-1.0 resnetbackbone, a gst-launch-1.0 pipeline and backbone-infer from there, and
# with GObject introspection the Python module gstfeaturemeta on the unpacked typelib.
#
#   deb_test.sh BUILD_DIR WORK_DIR VERSION LIBDIR PLUGINDIR WITH_CUDA WITH_GI PYTHONDIR
set -euo pipefail
build=$1 work=$2 version=$3 libdir=$4 plugindir=$5 with_cuda=$6 with_gi=$7 pythondir=$8
fail() { echo "deb_test: FAILED: $*" >&2; exit 1; }
rm -rf "$work" && mkdir -p "$work"

echo "== cpack"
cpack --config "$build/CPackConfig.cmake" -B "$work/cpack" > "$work/cpack.log" 2>&1 \
  || { cat "$work/cpack.log"; fail "cpack"; }
arch=$(dpkg --print-architecture)
v="$version-1"
expected="libbackbone0 libbackbone-dev libgstfeaturemeta-1.0-0 libgstfeaturemeta-dev gstreamer1.0-backbone backbone-tools backbone-configs"
[ "$with_cuda" = ON ] && expected="$expected libbackbone-cuda0"
[ "$with_gi" = ON ] && expected="$expected gir1.2-gstfeaturemeta-1.0 python3-gstfeaturemeta"
n=0
for p in $expected; do
  a=$arch; case "$p" in backbone-configs|python3-gstfeaturemeta) a=all ;; esac
  deb=$work/cpack/${p}_${v}_${a}.deb
  [ -f "$deb" ] || fail "no $deb (have: $(cd "$work/cpack" && ls ./*.deb))"
  [ "$(dpkg-deb -f "$deb" Package)" = "$p" ] || fail "$deb: Package is not $p"
  [ "$(dpkg-deb -f "$deb" Version)" = "$v" ] || fail "$deb: Version is not $v"
  [ "$(dpkg-deb -f "$deb" Architecture)" = "$a" ] || fail "$deb: Architecture is not $a"
  echo "$p: Depends: $(dpkg-deb -f "$deb" Depends)"
  n=$((n + 1))
done
[ "$(ls "$work"/cpack/*.deb | wc -l)" = "$n" ] || fail "unexpected packages: $(ls "$work"/cpack/*.deb)"

# Depends: the -dev packages and the plugin pin their libraries' version; dpkg-shlibdeps named
# Debian's own packages of LibTorch, yaml-cpp, OpenCV and GStreamer.
depends() { dpkg-deb -f "$work/cpack/${1}_${v}_${2:-$arch}.deb" Depends; }
need() {  # need PACKAGE REGEX...
  local p=$1 d; shift; d=$(depends "$p")
  for re in "$@"; do grep -Eq "$re" <<< "$d" || fail "$p: Depends '$d' lacks $re"; done
}
need libbackbone0 "(^|, )libtorch[0-9.]+( |,|$)" "libyaml-cpp0\.[0-9]+" "libstdc\+\+6" "libc6"
need libbackbone-dev "libbackbone0 \(= $v\)"
need libgstfeaturemeta-1.0-0 "libgstreamer1\.0-0" "libglib2\.0-0"
need libgstfeaturemeta-dev "libgstfeaturemeta-1\.0-0 \(= $v\)" "libgstreamer1\.0-dev"
need gstreamer1.0-backbone "libbackbone0 \(= $v\)" "libgstfeaturemeta-1\.0-0 \(= $v\)" "libgstreamer1\.0-0" \
  "libgstreamer-plugins-base1\.0-0"
need backbone-tools "libbackbone0 \(= $v\)" "libopencv-(core|imgcodecs)[0-9]+"
if dpkg -c "$work/cpack/backbone-tools_${v}_$arch.deb" > "$work/tools.list" && grep -q "/usr/bin/backbone-extract$" "$work/tools.list"; then
  need backbone-tools "libgstfeaturemeta-1\.0-0 \(= $v\)" "gstreamer1\.0-backbone \(= $v\)" "libboost-program-options"
fi
[ -z "$(depends backbone-configs all)" ] || fail "backbone-configs depends on something"
if [ "$with_cuda" = ON ]; then
  need libbackbone-cuda0 "^libbackbone0 \(= $v\)$"
fi
if [ "$with_gi" = ON ]; then
  need gir1.2-gstfeaturemeta-1.0 "libgstfeaturemeta-1\.0-0 \(= $v\)" "gir1\.2-gstreamer-1\.0"
  need libgstfeaturemeta-dev "gir1\.2-gstfeaturemeta-1\.0 \(= $v\)"
  d=$(depends python3-gstfeaturemeta all)
  for re in "gir1\.2-gstfeaturemeta-1\.0 \(= $v\)" "python3-gst-1\.0" "python3-numpy" "python3-gi"; do
    grep -Eq "$re" <<< "$d" || fail "python3-gstfeaturemeta: Depends '$d' lacks $re"
  done
fi
# The shared libraries' packages say how to depend on them (DEBIAN/shlibs).
shlibs=$(dpkg-deb -I "$work/cpack/libbackbone0_${v}_$arch.deb" shlibs)
grep -q "^libbackbone 0 libbackbone0 (>= $v)" <<< "$shlibs" || fail "libbackbone0 has no shlibs entry: $shlibs"

echo "== files: no file in two packages; together exactly cmake --install's files"
for deb in "$work"/cpack/*.deb; do
  # dpkg -c: permissions owner size date time path [-> target]; keep all but directories.
  dpkg -c "$deb" | awk '$1 !~ /^d/ { print $6 }' | sed 's|^\./||' | sort > "$deb.files"
done
sort "$work"/cpack/*.deb.files | uniq -d > "$work/duplicates"
[ ! -s "$work/duplicates" ] || fail "files in two packages: $(cat "$work/duplicates")"
DESTDIR=$work/destdir cmake --install "$build" > /dev/null
(cd "$work/destdir" && find . ! -type d | sed 's|^\./||' | sort) > "$work/installed.files"
sort -u "$work"/cpack/*.deb.files > "$work/packaged.files"
diff -u "$work/installed.files" "$work/packaged.files" > "$work/files.diff" \
  || fail "packages differ from cmake --install (- installed only, + packaged only): $(cat "$work/files.diff")"
echo "$(wc -l < "$work/packaged.files") files in $n packages"
grep -qx "usr/$plugindir/libgstbackbone.so" "$work"/cpack/gstreamer1.0-backbone_*.deb.files \
  || fail "the plugin is not in usr/$plugindir of gstreamer1.0-backbone"

echo "== dpkg -x into $work/root (all but the CUDA module) and run from there"
for deb in "$work"/cpack/*.deb; do
  case "$(basename "$deb")" in libbackbone-cuda0_*) continue ;; esac
  dpkg -x "$deb" "$work/root"
done
root=$work/root
export LD_LIBRARY_PATH=$root/usr/$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export GST_PLUGIN_PATH=$root/usr/$plugindir
export GST_REGISTRY_1_0=$work/registry.bin
unset GST_PLUGIN_PATH_1_0
gst-inspect-1.0 resnetbackbone > "$work/inspect.txt" || { cat "$work/inspect.txt"; fail "gst-inspect-1.0 resnetbackbone"; }
grep -q "Filename *$root/usr/$plugindir/libgstbackbone.so" "$work/inspect.txt" \
  || fail "gst-inspect-1.0 did not load the unpacked plugin: $(grep Filename "$work/inspect.txt")"
grep -E "Filename|Version|config-file" "$work/inspect.txt" | head -3
# README.md's pipeline ("Install"), the config from backbone-configs under the root.
gst-launch-1.0 -e videotestsrc num-buffers=10 ! video/x-raw,width=320,height=240 \
  ! resnetbackbone config-file="$root/usr/share/backbone/configs/R-50.yaml" \
  ! featuresink location="$work/features" > "$work/launch.log" 2>&1 \
  || { cat "$work/launch.log"; fail "gst-launch-1.0"; }
for level in res2 res3 res4 res5; do
  grep -q "\"$level\"" "$work/features/index.json" || fail "featuresink wrote no $level ($work/features)"
done
grep -q '"frames": 10,' "$work/features/index.json" || fail "featuresink did not write 10 frames ($work/features)"
echo "gst-launch-1.0: $(ls "$work/features" | tr '\n' ' ')"
if [ "$with_gi" = ON ]; then
  grep -qx "usr/$libdir/girepository-1.0/GstFeatureMeta-1.0.typelib" "$work"/cpack/gir1.2-gstfeaturemeta-1.0_*.deb.files \
    || fail "the typelib is not in usr/$libdir/girepository-1.0 of gir1.2-gstfeaturemeta-1.0"
  grep -qx "usr/share/gir-1.0/GstFeatureMeta-1.0.gir" "$work"/cpack/libgstfeaturemeta-dev_*.deb.files \
    || fail "the .gir is not in usr/share/gir-1.0 of libgstfeaturemeta-dev"
  # The module and the typelib from the root (Debian's python3: the first on PATH may lack gi):
  # every level of one frame as numpy.
  GI_TYPELIB_PATH=$root/usr/$libdir/girepository-1.0 PYTHONPATH=$root/usr/$pythondir /usr/bin/python3 - \
      "$root/usr/share/backbone/configs/R-50.yaml" > "$work/python.log" 2>&1 <<'PY' || { cat "$work/python.log"; fail "python3 gstfeaturemeta"; }
import sys
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
import gstfeaturemeta
Gst.init(None)
p = Gst.parse_launch("videotestsrc num-buffers=1 ! video/x-raw,width=64,height=64 ! resnetbackbone "
                     f"config-file={sys.argv[1]} ! appsink name=sink")
p.set_state(Gst.State.PLAYING)
feats = gstfeaturemeta.levels(p.get_by_name("sink").emit("pull-sample"))
p.set_state(Gst.State.NULL)
print(gstfeaturemeta.__file__, {k: list(a.shape) for k, a in feats.items()})
assert list(feats) == ["res2", "res3", "res4", "res5"], feats.keys()
PY
  grep -q "^$root/usr/$pythondir/gstfeaturemeta/__init__.py " "$work/python.log" \
    || fail "python3 did not import the unpacked gstfeaturemeta: $(cat "$work/python.log")"
  echo "python3 gstfeaturemeta: $(cat "$work/python.log")"
fi
"$root/usr/bin/backbone-infer" --help > "$work/infer-help.txt" 2>&1 || { cat "$work/infer-help.txt"; fail "backbone-infer --help"; }
echo "deb_test: passed"
