#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Consumer test (ctest: consumer_install, label packaging): installs the build into a scratch
# prefix with `cmake --install --prefix`, checks the layout, then builds tests/consumer/project
# against that prefix twice, with find_package(Backbone COMPONENTS backbone featuremeta) and with
# pkg-config (backbone, gstreamer-featuremeta-1.0), and runs its two programs: run-backbone (C++,
# the backbone on a frame) and read-meta (C, the meta from a pipeline with the installed plugin).
#
#   consumer_test.sh BUILD_DIR WORK_DIR LIBDIR PLUGINDIR CONFIGURED_PREFIX DATA_DIR GENERATOR CC CXX
# LIBDIR / PLUGINDIR: CMAKE_INSTALL_LIBDIR and the plugin folder, relative to the prefix.
set -euo pipefail
build=$1 work=$2 libdir=$3 plugindir=$4 configured_prefix=$5 data=$6 generator=$7 cc=$8 cxx=$9
here=$(cd "$(dirname "$0")" && pwd)
prefix=$work/prefix
fail() { echo "consumer_test: FAILED: $*" >&2; exit 1; }

rm -rf "$work" && mkdir -p "$work"
echo "== cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" > "$work/install.log"

echo "== layout"
for f in "$libdir/libbackbone.so.0" "$libdir/libbackbone.so" include/backbone/backbone.h include/backbone/version.h \
         "$libdir/libgstfeaturemeta-1.0.so.0" "$libdir/libgstfeaturemeta-1.0.so" \
         include/gstreamer-1.0/gst/featuremeta/featuremeta.h \
         "$libdir/pkgconfig/backbone.pc" "$libdir/pkgconfig/gstreamer-featuremeta-1.0.pc" \
         "$libdir/cmake/Backbone/BackboneConfig.cmake" "$libdir/cmake/Backbone/BackboneConfigVersion.cmake" \
         "$libdir/cmake/Backbone/BackboneTargets.cmake" "$libdir/cmake/Backbone/BackboneFeatureMetaTargets.cmake" \
         "$plugindir/libgstbackbone.so" bin/backbone-infer share/backbone/configs/R-50.yaml \
         share/backbone/configs/Base-ResNet.yaml; do
  [ -e "$prefix/$f" ] || fail "$prefix/$f was not installed"
  echo "  $f"
done
for pc in backbone gstreamer-featuremeta-1.0; do
  grep -qx "prefix=$configured_prefix" "$prefix/$libdir/pkgconfig/$pc.pc" || fail "$pc.pc does not say prefix=$configured_prefix"
done

# Runtime environment of an installed tree outside the linker's and GStreamer's default paths (as
# README's "Install" section says): LD_LIBRARY_PATH and GST_PLUGIN_PATH; a private registry.
export LD_LIBRARY_PATH=$prefix/$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export GST_PLUGIN_PATH=$prefix/$plugindir
export GST_REGISTRY_1_0=$work/registry.bin
unset GST_PLUGIN_PATH_1_0
inspect=$(gst-inspect-1.0 resnetbackbone) || fail "gst-inspect-1.0 resnetbackbone"
grep -q "Filename *$prefix/$plugindir/libgstbackbone.so" <<< "$inspect" \
  || fail "gst-inspect-1.0 did not load the plugin from $prefix/$plugindir: $(grep Filename <<< "$inspect")"

# The pkg-config files hold the prefix the build was configured for; a tree installed elsewhere
# with --prefix gets copies with prefix= set to where it is (README: "Install").
mkdir -p "$work/pkgconfig"
for pc in backbone gstreamer-featuremeta-1.0; do
  sed "s|^prefix=.*|prefix=$prefix|" "$prefix/$libdir/pkgconfig/$pc.pc" > "$work/pkgconfig/$pc.pc"
done

for with in cmake pkg-config; do
  echo "== consumer project with $with"
  bdir=$work/build-$with
  if [ "$with" = cmake ]; then
    cmake -S "$here/project" -B "$bdir" -G "$generator" -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
      -DCONSUMER_WITH=cmake -DCMAKE_PREFIX_PATH="$prefix" > "$work/configure-$with.log" \
      || { cat "$work/configure-$with.log"; fail "configure with $with"; }
    grep -q "consumer: Backbone 0*[0-9.]* from $prefix/$libdir/cmake/Backbone" "$work/configure-$with.log" \
      || { cat "$work/configure-$with.log"; fail "find_package(Backbone) did not find $prefix"; }
  else
    PKG_CONFIG_PATH=$work/pkgconfig cmake -S "$here/project" -B "$bdir" -G "$generator" -DCMAKE_C_COMPILER="$cc" \
      -DCMAKE_CXX_COMPILER="$cxx" -DCONSUMER_WITH=pkg-config > "$work/configure-$with.log" \
      || { cat "$work/configure-$with.log"; fail "configure with $with"; }
    grep -q "consumer: backbone [0-9.]* from $prefix/$libdir, gstreamer-featuremeta-1.0 from $prefix/$libdir" \
      "$work/configure-$with.log" || { cat "$work/configure-$with.log"; fail "pkg-config did not find $prefix"; }
  fi
  grep "consumer:" "$work/configure-$with.log"
  cmake --build "$bdir" > "$work/build-$with.log" 2>&1 || { cat "$work/build-$with.log"; fail "build with $with"; }
  # (grep reads a variable, not a pipe: grep -q quitting early would fail ldd under pipefail)
  libs=$(ldd "$bdir/run-backbone")
  grep -q "libbackbone.so.0 => $prefix/$libdir/" <<< "$libs" || fail "run-backbone does not load $prefix's libbackbone"
  libs=$(ldd "$bdir/read-meta")
  grep -q "libgstfeaturemeta-1.0.so.0 => $prefix/$libdir/" <<< "$libs" || fail "read-meta does not load $prefix's meta library"
  if grep -q "libbackbone\|libstdc++" <<< "$libs"; then fail "read-meta links C++ or the backbone"; fi
  echo "-- run-backbone"
  "$bdir/run-backbone" "$data" || fail "run-backbone ($with)"
  echo "-- read-meta"
  "$bdir/read-meta" "$data" || fail "read-meta ($with)"
done
echo "consumer_test: passed"
