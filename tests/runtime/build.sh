#!/usr/bin/env bash
# Build the real container runtime of the test cluster: enroot 4.1.2 and pyxis 0.24.0, from the
# sources in the shared research folder (read in place, never copied into the project).
#
#   bash tests/runtime/build.sh        # prints the build folder on its last line
#
# The build lands in $HPCREPRO_TEST_CACHE/runtime/<key>/ (default ~/.cache/hpcrepro-test), where
# <key> hashes both source trees, this script and the installed libslurm-dev (pyxis must be built
# against the Slurm release that loads it), so a rerun with nothing changed takes no time.
# Layout: prefix/bin/enroot (+ its helpers, config under prefix/etc/enroot) and spank_pyxis.so.
#
# As root it installs the Debian packages it needs. Every failure stops with a message naming
# what is missing; there is no fall-back to a stand-in.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# Beside the checkout, else the workplace's own (see tests/shared_dir.py).
SHARED="${HPCREPRO_SHARED_DIR:-$(dirname "$REPO")/shared}"
if [ -z "${HPCREPRO_SHARED_DIR:-}" ] && [ ! -d "$SHARED" ] && [ -d /work/shared ]; then
    SHARED=/work/shared
fi
SOURCES="$SHARED/research/container-runtimes"
ENROOT_SRC="$SOURCES/enroot-4.1.2"
PYXIS_SRC="$SOURCES/pyxis-0.24.0"
CACHE="${HPCREPRO_TEST_CACHE:-$HOME/.cache/hpcrepro-test}/runtime"

# Build tools, and what enroot runs at run time (see the sources' README).
BUILD_PACKAGES=(gcc make libc6-dev libslurm-dev libbsd-dev libmd-dev)
RUN_PACKAGES=(jq parallel squashfs-tools gawk curl pigz zstd libcap2-bin)

fail() {
    echo "test runtime: $*" >&2
    exit 1
}

for tree in "$ENROOT_SRC" "$PYXIS_SRC"; do
    [ -d "$tree" ] || fail "$tree is missing: the enroot and pyxis sources come from the shared" \
        "research folder (set HPCREPRO_SHARED_DIR to the folder holding research/)"
done

missing=()
for package in "${BUILD_PACKAGES[@]}" "${RUN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$package")
done
if ((${#missing[@]})); then
    [ "$(id -u)" -eq 0 ] || fail "Debian packages missing: ${missing[*]} (install them as root)"
    echo "test runtime: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if [ "${HPCREPRO_SKIP_APT_UPDATE:-0}" != 1 ]; then
        apt-get update -qq || fail "apt-get update failed"
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        fail "apt-get install ${missing[*]} failed"
fi

slurm_dev="$(dpkg-query -W -f='${Version}' libslurm-dev)"
key="$(
    {
        echo "libslurm-dev $slurm_dev"
        sha256sum "${BASH_SOURCE[0]}"
        (cd "$SOURCES" && find enroot-4.1.2 pyxis-0.24.0 -type f -print0 | sort -z |
            xargs -0 sha256sum)
    } | sha256sum | cut -c1-16
)"
OUT="$CACHE/$key"
if [ -x "$OUT/prefix/bin/enroot" ] && [ -f "$OUT/spank_pyxis.so" ] && [ -f "$OUT/READY" ]; then
    echo "test runtime: enroot and pyxis already built in $OUT" >&2
    echo "$OUT"
    exit 0
fi

mkdir -p "$CACHE"
WORK="$(mktemp -d "$CACHE/.build.XXXXXX")"
trap 'rm -rf -- "$WORK"' EXIT
cp -r "$ENROOT_SRC" "$WORK/enroot"
cp -r "$PYXIS_SRC" "$WORK/pyxis"
chmod -R u+w "$WORK"

# enroot: the snapshot has no git submodules (musl, makeself, linux-headers). Build its helpers
# against glibc, mark the missing deps as built, and give `enroot bundle` (the only user of
# makeself) a placeholder that says so. glibc 2.36 lacks strlcpy, and enroot's partial libbsd would
# be found first by -L, so Debian's static libbsd/libmd are linked by path.
(
    cd "$WORK/enroot"
    mkdir -p deps/linux-headers deps/makeself deps/dist/makeself/bin
    touch deps/linux-headers/.stamp deps/makeself/.stamp
    printf '#!/bin/sh\necho "enroot-makeself is not part of the test build (no enroot bundle)" >&2\nexit 1\n' \
        >deps/dist/makeself/bin/enroot-makeself
    chmod +x deps/dist/makeself/bin/enroot-makeself
    libdir="/usr/lib/$(gcc -dumpmachine)"
    # Installed with DESTDIR under its final prefix, then moved: enroot bakes its paths in.
    make -s FORCE_GLIBC=1 LDLIBS="$libdir/libbsd.a $libdir/libmd.a" prefix="$OUT/prefix" \
        DESTDIR="$WORK/root" install >"$WORK/enroot-build.log" 2>&1
    sed -i "s;$WORK/root;;g" "$WORK/root$OUT/prefix/bin/enroot" \
        "$WORK/root$OUT/prefix/etc/enroot/enroot.conf"
    mkdir -p "$WORK/out"
    mv "$WORK/root$OUT/prefix" "$WORK/out/prefix"
) || { tail -n 30 "$WORK/enroot-build.log" >&2; fail "building enroot failed (log above)"; }

# pyxis: a SPANK plugin built against Debian's libslurm-dev headers.
make -s -C "$WORK/pyxis" >"$WORK/pyxis-build.log" 2>&1 ||
    { tail -n 30 "$WORK/pyxis-build.log" >&2; fail "building pyxis failed (log above)"; }
cp "$WORK/pyxis/spank_pyxis.so" "$WORK/out/"

# The two test nodes share one host: PMIx's shared-memory data store (gds/ds12) cannot be used
# from inside their containers (PMIX ERROR ... gds_ds12_lock_pthread.c); its hash store works.
echo "PMIX_MCA_gds=hash" >"$WORK/out/prefix/etc/enroot/environ.d/50-test-cluster-pmix.env"
rm -rf -- "$OUT"
mv "$WORK/out" "$OUT"
"$OUT/prefix/bin/enroot" version >/dev/null || fail "the enroot just built in $OUT does not run"
echo "enroot 4.1.2, pyxis 0.24.0, libslurm-dev $slurm_dev" >"$OUT/READY"
echo "test runtime: built enroot and pyxis into $OUT" >&2
echo "$OUT"
