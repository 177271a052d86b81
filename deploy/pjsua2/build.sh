#!/usr/bin/env bash
# Build the pjsua2 Python wheel that dialswitch's call engine links.
#
# Usage: deploy/pjsua2/build.sh PYTHON
#
# Builds (or reuses from the cache) a pjsua2 wheel for the interpreter PYTHON
# and prints the wheel's absolute path as the last line of stdout. Progress
# and tool output go to stderr and to a build log. See README.md beside this
# file for the environment variables and the cache layout.
#
# Copyright (C) dialswitch contributors. GPL-3.0-or-later.

# The whole script is one block, so bash reads it completely before running
# it: editing this file during a build does not disturb that build.
{
set -Eeuo pipefail

# Everything this script and its children print goes to stderr; fd 3 is the
# real stdout, used once at the end for the wheel path.
exec 3>&1 1>&2

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT="$HERE/$(basename "${BASH_SOURCE[0]}")"
CONFIG_SITE="$HERE/config_site.h"
PATCH_DIR="$HERE/patches"
CACHE_ROOT="${DIALSWITCH_CACHE:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache/dialswitch}/pjsua2"
SOURCE_PACKAGE=ring
APT_REFRESH_SECONDS=$((24 * 3600))
START=$SECONDS

# Packages the build needs (Debian names).
BUILD_PACKAGES=(build-essential dpkg-dev patch xz-utils pkg-config swig
                libssl-dev libopus-dev uuid-dev)

STEP="starting"
HINT=""
LOG=""
WORK=""

log() { printf '[pjsua2] %s\n' "$*" >&2; }
warn() { printf '[pjsua2] warning: %s\n' "$*" >&2; }

# step NAME HINT: what we are doing now, and what to tell the user if it fails.
step() {
    STEP=$1
    HINT=${2:-}
    log "$(printf '%4ss  %s' "$((SECONDS - START))" "$STEP")"
}

# fail MESSAGE: stop with a one-paragraph explanation as the last output.
fail() {
    trap - ERR
    printf '\n[pjsua2] BUILD FAILED: %s\n' "$*" >&2
    exit 1
}

on_error() {
    local rc=$? cmd=$BASH_COMMAND
    trap - ERR
    (( ${#cmd} <= 160 )) || cmd="${cmd:0:157}..."
    # Inside a subshell: just leave; the main shell reports the failure.
    (( BASH_SUBSHELL == 0 )) || exit "$rc"
    if [[ -n $LOG && -s $LOG ]]; then
        printf '\n[pjsua2] last lines of %s:\n' "$LOG" >&2
        tail -n 25 "$LOG" | sed 's/^/    /' >&2 || true
    fi
    local where=""
    [[ -n $WORK && -d $WORK ]] && where=" The work directory $WORK is kept for inspection (the next run deletes it)."
    [[ -n $LOG ]] && where+=" Full log: $LOG."
    fail "the step \"$STEP\" failed (command \`$cmd\` exited with status $rc). ${HINT:-Check the messages above.}$where"
}
trap on_error ERR
trap 'trap - ERR; printf "\n[pjsua2] BUILD FAILED: interrupted during \"%s\".\n" "$STEP" >&2; exit 130' INT TERM

# run CMD...: run a tool with its output appended to the build log.
run() {
    printf '\n$ %s\n' "$*" >>"$LOG"
    "$@" >>"$LOG" 2>&1
}

sha256() { sha256sum | cut -d' ' -f1; }

# ---------------------------------------------------------------------------
# Arguments and interpreter

[[ $# -eq 1 ]] || fail "usage: $0 PYTHON (the interpreter the wheel is for, e.g. .venv/bin/python)."
PY_ARG=$1
if ! PY=$(command -v -- "$PY_ARG"); then
    fail "the Python interpreter \"$PY_ARG\" was not found or is not executable. Pass the path of the interpreter the wheel is for, for example .venv/bin/python."
fi
[[ $PY == /* ]] || PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"

step "inspecting $PY" "The interpreter must be CPython 3.8 or newer."
PY_IDENT=$("$PY" -c '
import sys, sysconfig, platform
assert sys.version_info >= (3, 8), "Python 3.8 or newer needed"
print(sys.implementation.name, sys.implementation.cache_tag,
      sysconfig.get_config_var("SOABI"), sysconfig.get_platform(),
      platform.machine(), sys.version.replace("\n", " "))
')
PY_VER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

mkdir -p "$CACHE_ROOT"

# ---------------------------------------------------------------------------
# Source identity (cheap: no download when the cache already holds the wheel)

APT_DIR="$CACHE_ROOT/apt"
APT_OPTS=()

# A private apt configuration that sees the machine's own Debian mirrors as
# deb-src entries. The system's apt configuration is never touched.
setup_private_apt() {
    local new f found=0
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    new=$(mktemp -d "$APT_DIR/etc.new.XXXXXX")
    mkdir -p "$new/sources.list.d"
    : >"$new/sources.list"
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -e $f ]] || continue
        sed -E 's/^Types:.*/Types: deb-src/I' "$f" >"$new/sources.list.d/$(basename "$f")"
        found=1
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -e $f ]] || continue
        sed -nE 's/^[[:space:]]*deb(-src)?([[:space:]])/deb-src\2/p' "$f" >>"$new/sources.list"
    done
    [[ -s $new/sources.list ]] && found=1
    [[ $found == 1 ]] || fail "no Debian package sources were found in /etc/apt (sources.list or sources.list.d/*.sources), so the '$SOURCE_PACKAGE' source package cannot be fetched. Configure a Debian bookworm mirror for apt, or set PJPROJECT_TARBALL to a pjproject .tar.gz (path or URL)."
    if [[ -d $APT_DIR/etc ]] && diff -r -q "$new" "$APT_DIR/etc" >/dev/null 2>&1; then
        rm -rf "$new"
    else
        rm -rf "$APT_DIR/etc"
        mv "$new" "$APT_DIR/etc"
        rm -f "$APT_DIR/lists/.updated"
    fi
    APT_OPTS=(-o "Dir::Etc::SourceList=$APT_DIR/etc/sources.list"
              -o "Dir::Etc::SourceParts=$APT_DIR/etc/sources.list.d"
              -o "Dir::State::Lists=$APT_DIR/lists"
              -o "Dir::Cache=$APT_DIR/cache")
    # The unprivileged _apt user cannot reach a cache under /root.
    if [[ $EUID -eq 0 ]]; then
        APT_OPTS+=(-o "APT::Sandbox::User=root")
    fi
    return 0
}

refresh_private_apt() {
    local stamp="$APT_DIR/lists/.updated" age
    if [[ -e $stamp && ${PJSUA2_APT_REFRESH:-0} != 1 ]]; then
        age=$(( $(date +%s) - $(stat -c %Y "$stamp") ))
        (( age < APT_REFRESH_SECONDS )) && return 0
    fi
    log "refreshing the private deb-src package lists"
    if apt-get -q "${APT_OPTS[@]}" update >"$APT_DIR/update.log" 2>&1; then
        touch "$stamp"
    elif [[ -e $stamp ]]; then
        warn "could not refresh the deb-src lists (see $APT_DIR/update.log); using the previous ones"
    else
        tail -n 15 "$APT_DIR/update.log" >&2 || true
        fail "apt-get update with the private deb-src configuration failed, so the '$SOURCE_PACKAGE' source package cannot be located. Check network access to the Debian mirror in /etc/apt/sources.list.d (details in $APT_DIR/update.log), or set PJPROJECT_TARBALL to a local pjproject .tar.gz."
    fi
}

TARBALL_FILE=""
if [[ -n ${PJPROJECT_TARBALL:-} ]]; then
    SOURCE_KIND=upstream
    case $PJPROJECT_TARBALL in
    http://*|https://*)
        # Downloaded once per URL: a release URL is assumed never to change.
        mkdir -p "$CACHE_ROOT/downloads"
        TARBALL_FILE="$CACHE_ROOT/downloads/$(printf '%s' "$PJPROJECT_TARBALL" | sha256).tar.gz"
        if [[ ! -s $TARBALL_FILE ]]; then
            step "downloading $PJPROJECT_TARBALL" "Check the URL and network access, or download the tarball yourself and set PJPROJECT_TARBALL to its local path."
            "$PY" - "$PJPROJECT_TARBALL" "$TARBALL_FILE.part" <<'EOF'
import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=60) as r, open(sys.argv[2], "wb") as f:
    shutil.copyfileobj(r, f)
EOF
            mv "$TARBALL_FILE.part" "$TARBALL_FILE"
        fi
        ;;
    *)
        TARBALL_FILE=$(readlink -f -- "$PJPROJECT_TARBALL" || true)
        [[ -n $TARBALL_FILE && -f $TARBALL_FILE ]] || fail "PJPROJECT_TARBALL=$PJPROJECT_TARBALL is not a readable file. Give the path (or an http(s) URL) of a pjproject release .tar.gz, or unset it to build from Debian's '$SOURCE_PACKAGE' source package."
        ;;
    esac
    SOURCE_ID="upstream-tarball sha256:$(sha256 <"$TARBALL_FILE")"
else
    SOURCE_KIND=ring
    step "locating Debian source package '$SOURCE_PACKAGE'" "The build needs apt and a Debian bookworm mirror (the machine's own /etc/apt sources are reused as deb-src). Alternatively set PJPROJECT_TARBALL to a pjproject .tar.gz."
    command -v apt-get >/dev/null || fail "apt-get was not found: building from Debian's '$SOURCE_PACKAGE' source package needs a Debian system. Set PJPROJECT_TARBALL to a pjproject .tar.gz (path or URL) instead."
    setup_private_apt
    refresh_private_apt
    # Lines: 'URI' FILENAME SIZE SHA256:HASH
    SRC_URIS=$(cd "$APT_DIR" && apt-get -qq "${APT_OPTS[@]}" --print-uris source "$SOURCE_PACKAGE" 2>>"$APT_DIR/update.log" | grep "^'" || true)
    if [[ -z $SRC_URIS ]]; then
        fail "apt cannot find the '$SOURCE_PACKAGE' source package in the private deb-src lists (see $APT_DIR/update.log). This recipe expects Debian bookworm, whose 'ring' package bundles pjproject 2.12.1. Run with PJSUA2_APT_REFRESH=1 to refresh the lists, or set PJPROJECT_TARBALL to a pjproject .tar.gz."
    fi
    SOURCE_ID="debian-source $SOURCE_PACKAGE $(awk '{print $2, $3, $4}' <<<"$SRC_URIS" | sort | tr '\n' ' ')"
fi

# ---------------------------------------------------------------------------
# Cache key and cache lookup

compute_key() {
    {
        printf 'source: %s\n' "$SOURCE_ID"
        printf 'python: %s\n' "$PY_IDENT"
        printf 'build.sh: %s\n' "$(sha256 <"$SCRIPT")"
        printf 'config_site.h: %s\n' "$(sha256 <"$CONFIG_SITE")"
        local p
        for p in "$PATCH_DIR"/*.patch; do
            [[ -e $p ]] || continue
            printf 'patch %s: %s\n' "$(basename "$p")" "$(sha256 <"$p")"
        done
    }
}
KEY_INPUTS=$(compute_key)
KEY=$(printf '%s\n' "$KEY_INPUTS" | sha256)
OUT_DIR="$CACHE_ROOT/$KEY"

cached_wheel() {
    local w
    [[ -e $OUT_DIR/.complete ]] || return 1
    for w in "$OUT_DIR"/*.whl; do
        [[ -f $w ]] && { printf '%s\n' "$w"; return 0; }
    done
    return 1
}

if [[ ${PJSUA2_REBUILD:-0} != 1 ]] && WHEEL=$(cached_wheel); then
    log "cached wheel (key ${KEY:0:16}) after $((SECONDS - START))s"
    printf '%s\n' "$WHEEL" >&3
    exit 0
fi

# One build at a time per cache.
if command -v flock >/dev/null; then
    exec 9>"$CACHE_ROOT/.lock"
    if ! flock -n 9; then
        log "another build holds $CACHE_ROOT/.lock; waiting"
        flock 9
    fi
fi
if [[ ${PJSUA2_REBUILD:-0} != 1 ]] && WHEEL=$(cached_wheel); then
    log "cached wheel (built meanwhile by another run)"
    printf '%s\n' "$WHEEL" >&3
    exit 0
fi

log "building pjsua2 for Python $PY_VER (key ${KEY:0:16}, source: $SOURCE_KIND)"

# ---------------------------------------------------------------------------
# Build dependencies

step "checking build dependencies" "Install the missing Debian packages (apt-get install ${BUILD_PACKAGES[*]}) and run again."
missing=()
for pkg in "${BUILD_PACKAGES[@]}"; do
    if ! dpkg-query -W -f '${Status}\n' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if ! "$PY" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    case $(readlink -f "$PY") in
    /usr/bin/*) missing+=("python$PY_VER-dev") ;;
    *) fail "the C headers of $PY (Python.h) are missing, so no extension module can be compiled for it. Install the development files of that Python (for a pyenv Python: rebuild it normally; for Debian's python3: apt-get install python$PY_VER-dev)." ;;
    esac
fi
if (( ${#missing[@]} )); then
    if [[ $EUID -ne 0 ]]; then
        fail "these Debian packages are needed and missing: ${missing[*]}. Install them (sudo apt-get install ${missing[*]}) or run this script as root, which installs them."
    fi
    step "installing ${missing[*]}" "apt-get could not install the build dependencies; check the apt sources and network, then run: apt-get install ${missing[*]}."
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
fi
for tool in make gcc g++ swig patch tar pkg-config; do
    command -v "$tool" >/dev/null || fail "the tool '$tool' is missing. Install the build dependencies: apt-get install ${BUILD_PACKAGES[*]}."
done

# ---------------------------------------------------------------------------
# Work directory

for old in "$CACHE_ROOT"/work.*; do
    [[ -d $old ]] && rm -rf -- "$old"
done
WORK=$(mktemp -d "$CACHE_ROOT/work.XXXXXX")
LOG="$WORK/build.log"
: >"$LOG"
printf '%s\n' "$KEY_INPUTS" >"$WORK/key-inputs.txt"

# ---------------------------------------------------------------------------
# Source

if [[ $SOURCE_KIND == ring ]]; then
    SRC_DIR="$CACHE_ROOT/src/$SOURCE_PACKAGE"
    mkdir -p "$SRC_DIR"
    step "fetching Debian source package '$SOURCE_PACKAGE'" "apt-get source --download-only failed; check network access to the Debian mirror, or set PJPROJECT_TARBALL to a local pjproject .tar.gz."
    need_download=0
    while read -r _uri name size hash; do
        f="$SRC_DIR/$name"
        if [[ ! -f $f || $(stat -c %s "$f") != "$size" || "SHA256:$(sha256 <"$f")" != "$hash" ]]; then
            need_download=1
        fi
    done <<<"$SRC_URIS"
    if [[ $need_download == 1 ]]; then
        (cd "$SRC_DIR" && run apt-get -q "${APT_OPTS[@]}" source --download-only "$SOURCE_PACKAGE")
    fi
    ORIG=$(awk '$2 ~ /\.orig\.tar\./ {print $2}' <<<"$SRC_URIS")
    DEBIAN_TAR=$(awk '$2 ~ /\.debian\.tar\./ {print $2}' <<<"$SRC_URIS")
    [[ -n $ORIG && -n $DEBIAN_TAR ]] || fail "the '$SOURCE_PACKAGE' source package has an unexpected layout (no orig and debian tarballs): $SRC_URIS. Set PJPROJECT_TARBALL to a pjproject .tar.gz instead."
    while read -r _uri name size hash; do
        [[ "SHA256:$(sha256 <"$SRC_DIR/$name")" == "$hash" ]] || fail "the downloaded $name does not match the checksum apt announced. Delete $SRC_DIR and run again."
    done <<<"$SRC_URIS"
    # Forget files of older versions of the source package.
    for f in "$SRC_DIR"/*; do
        [[ -e $f ]] || continue
        grep -qF " $(basename "$f") " <<<"$SRC_URIS" || rm -f -- "$f"
    done

    step "extracting the bundled pjproject tree" "The orig tarball of '$SOURCE_PACKAGE' should contain jami-*/daemon/contrib/tarballs-unpacked/pjproject-*.tar.gz/pjproject-*/. If Debian changed the package, set PJPROJECT_TARBALL to a pjproject .tar.gz."
    mkdir -p "$WORK/x"
    run tar -xf "$SRC_DIR/$ORIG" -C "$WORK/x" --no-same-owner --no-same-permissions \
        --wildcards 'jami-*/daemon/contrib/tarballs-unpacked/pjproject-*.tar.gz/pjproject-*/*'
    mapfile -t trees < <(find "$WORK/x" -mindepth 6 -maxdepth 6 -type d -path '*/tarballs-unpacked/pjproject-*.tar.gz/pjproject-*')
    [[ ${#trees[@]} -eq 1 ]] || fail "expected exactly one pjproject tree in $ORIG, found ${#trees[@]}. Set PJPROJECT_TARBALL to a pjproject .tar.gz instead."
    mv "${trees[0]}" "$WORK/pjproject"
    PJ_TREE_NAME=$(basename "${trees[0]}")
    rm -rf "$WORK/x"

    step "applying Debian's security patches to the pjproject tree" "A patch from debian/patches of '$SOURCE_PACKAGE' did not apply to the bundled pjproject tree."
    mkdir -p "$WORK/debian"
    run tar -xf "$SRC_DIR/$DEBIAN_TAR" -C "$WORK/debian" --no-same-owner debian/patches
    # Keep, from each Debian patch in series order, only the parts that touch
    # the bundled pjproject tree, with paths made relative to that tree.
    "$PY" - "$WORK/debian/debian/patches" "$PJ_TREE_NAME" "$WORK/debian/pj" <<'EOF'
import os, re, sys
pdir, tree, out = sys.argv[1:]
os.makedirs(out)
series = os.path.join(pdir, "series")
names = [l.split()[0] for l in open(series) if l.strip() and not l.startswith("#")]
prefix = re.compile(r"^(?:[^/\s]+/)?daemon/contrib/tarballs-unpacked/%s\.tar\.gz/%s/" %
                    (re.escape(tree), re.escape(tree)))
n = 0
for name in names:
    with open(os.path.join(pdir, name), encoding="utf-8", errors="surrogateescape") as f:
        lines = f.read().splitlines(keepends=True)
    keep, inside, i = [], False, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            path = lines[i + 1][4:].split("\t")[0].strip()
            inside = bool(prefix.match(path))
            if inside:
                rel = prefix.sub("", path)
                keep += ["--- a/%s\n" % rel, "+++ b/%s\n" % rel]
            i += 2
            continue
        if inside and not line.startswith(("Index: ", "=====", "diff ")):
            keep.append(line)
        i += 1
    if keep:
        n += 1
        with open(os.path.join(out, "%02d-%s" % (n, name)), "w",
                  encoding="utf-8", errors="surrogateescape") as f:
            f.writelines(keep)
EOF
    found_cve=0
    for p in "$WORK"/debian/pj/*; do
        [[ -e $p ]] || continue
        log "      debian: $(basename "$p")"
        [[ $p == *CVE-2023-27585* ]] && found_cve=1
        (cd "$WORK/pjproject" && run patch -p1 --batch --forward -i "$p")
    done
    [[ $found_cve == 1 ]] || fail "Debian's CVE-2023-27585 patch was not found in debian/patches of '$SOURCE_PACKAGE'; the package layout changed. Review the package, or set PJPROJECT_TARBALL to a pjproject .tar.gz."
    rm -rf "$WORK/debian"
else
    step "extracting $TARBALL_FILE" "PJPROJECT_TARBALL must be a pjproject source .tar.gz (e.g. a release archive of pjproject 2.14 or later)."
    mkdir -p "$WORK/x"
    run tar -xf "$TARBALL_FILE" -C "$WORK/x" --no-same-owner --no-same-permissions
    mapfile -t trees < <(find "$WORK/x" -mindepth 2 -maxdepth 2 -type f -name aconfigure -printf '%h\n')
    [[ ${#trees[@]} -eq 1 && -d ${trees[0]}/pjsip-apps/src/swig/python ]] || fail "$TARBALL_FILE does not look like a pjproject source tarball (expected one top-level directory with aconfigure and pjsip-apps/src/swig/python)."
    mv "${trees[0]}" "$WORK/pjproject"
    rm -rf "$WORK/x"
fi
PJ="$WORK/pjproject"

# ---------------------------------------------------------------------------
# dialswitch patches

step "applying dialswitch patches" "A patch in $PATCH_DIR no longer applies to the Debian '$SOURCE_PACKAGE' tree; refresh it against the current source."
for p in "$PATCH_DIR"/*.patch; do
    [[ -e $p ]] || continue
    if (cd "$PJ" && patch -p1 --batch --forward --dry-run -i "$p" >>"$LOG" 2>&1); then
        log "      patch: $(basename "$p")"
        (cd "$PJ" && run patch -p1 --batch --forward -i "$p")
    elif [[ $SOURCE_KIND == upstream ]]; then
        warn "$(basename "$p") does not apply to this pjproject version; skipped"
    else
        fail "the patch $(basename "$p") does not apply to the pjproject tree of Debian's '$SOURCE_PACKAGE' (see $LOG). Refresh the patch against the current package, or set PJPROJECT_TARBALL to build another pjproject."
    fi
done

cp "$CONFIG_SITE" "$PJ/pjlib/include/pj/config_site.h"

# ---------------------------------------------------------------------------
# Native libraries

JOBS=${PJSUA2_JOBS:-$(nproc 2>/dev/null || echo 2)}
export CFLAGS="-O2 -fPIC -g0 ${PJSUA2_EXTRA_CFLAGS:-}"
export CXXFLAGS="-O2 -fPIC -g0 ${PJSUA2_EXTRA_CFLAGS:-}"
export LDFLAGS="${PJSUA2_EXTRA_LDFLAGS:-}"

step "configuring pjproject" "configure failed; the log above says which check failed. OpenSSL and Opus come from Debian: apt-get install libssl-dev libopus-dev uuid-dev pkg-config."
(cd "$PJ" && run ./configure \
    --disable-shared --enable-epoll \
    --disable-sound --disable-video \
    --disable-speex-aec --disable-speex-codec --disable-gsm-codec \
    --disable-ilbc-codec --disable-g7221-codec \
    --disable-sdl --disable-ffmpeg --disable-v4l2 --disable-openh264 \
    --disable-vpx --disable-libyuv --disable-libwebrtc \
    --disable-opencore-amr --disable-silk --disable-bcg729 \
    --disable-android-mediacodec --disable-darwin-ssl)
grep -q 'PJ_HAS_SSL_SOCK 1' "$PJ/pjlib/include/pj/compat/os_auto.h" \
    || fail "configure did not enable TLS: OpenSSL development files were not found. Install libssl-dev and run again."
grep -q 'PJ_SSL_SOCK_IMP.*OPENSSL' "$PJ/pjlib/include/pj/compat/os_auto.h" \
    || fail "configure picked a TLS backend other than OpenSSL. Install libssl-dev (and not only GnuTLS) and run again."
grep -q 'PJMEDIA_HAS_OPUS_CODEC 1' "$PJ/pjmedia/include/pjmedia-codec/config_auto.h" \
    || fail "configure did not find Opus. Install libopus-dev and run again."

step "compiling pjproject libraries ($JOBS jobs)" "The C build failed; the compiler error is in the log. If a header is missing, install the matching -dev package (libssl-dev, libopus-dev, uuid-dev)."
(cd "$PJ" && run make dep)
(cd "$PJ" && run make -j"$JOBS" lib)

# ---------------------------------------------------------------------------
# Python module and wheel

BUILD_PY="$PY"
if ! "$PY" -c '
import setuptools, pip
try:
    import setuptools.command.bdist_wheel
except ImportError:
    import wheel
' >/dev/null 2>&1; then
    step "creating a build environment with setuptools" "$PY lacks setuptools/wheel and a private build venv could not be created from it. Install them into that interpreter (pip install setuptools wheel), or for Debian's python3 install python3-venv."
    run "$PY" -m venv "$WORK/buildenv"
    run "$WORK/buildenv/bin/python" -m pip install --disable-pip-version-check "setuptools>=64" wheel
    BUILD_PY="$WORK/buildenv/bin/python"
fi

SWIG_PY="$PJ/pjsip-apps/src/swig/python"
step "generating the SWIG wrapper" "SWIG failed to generate the pjsua2 wrapper; check that Debian's swig (4.x) is installed."
(cd "$SWIG_PY" && run make PYTHON_EXE="$BUILD_PY" \
    USE_THREADS="-threads -DSWIG_NO_EXPORT_ITERATOR_METHODS" pjsua2_wrap.cpp)
grep -q '#define SWIG_PYTHON_THREADS' "$SWIG_PY/pjsua2_wrap.cpp" \
    || fail "the SWIG wrapper was generated without thread support (-threads), so pjsua2 would never release the GIL. Check the patches in $PATCH_DIR against pjsip-apps/src/swig/python/Makefile."

step "compiling the Python extension and building the wheel" "Compiling pjsua2_wrap.cpp or packing the wheel failed; see the compiler output in the log. $PY needs its C headers and setuptools."
export PJSUA2_LOCAL_VERSION="dialswitch.${KEY:0:12}"
(cd "$SWIG_PY" && run env MAKE=make "$BUILD_PY" -m pip wheel --no-deps --no-build-isolation \
    --no-index --disable-pip-version-check -w "$WORK/dist" .)
mapfile -t wheels < <(find "$WORK/dist" -maxdepth 1 -name 'pjsua2-*.whl')
[[ ${#wheels[@]} -eq 1 ]] || fail "the wheel build finished without producing exactly one pjsua2 wheel in $WORK/dist."
BUILT="${wheels[0]}"

step "checking that the wheel imports" "The wheel was built but does not import in $PY; a missing shared library (ldd on _pjsua2*.so) usually means a runtime package such as libopus0 or libssl3 is missing."
mkdir -p "$WORK/verify"
"$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$BUILT" "$WORK/verify"
(cd "$WORK/verify" && run "$PY" -I -c '
import sys
sys.path.insert(0, ".")
import pjsua2 as pj
ep = pj.Endpoint()
ep.libCreate()
print("pjsua2", ep.libVersion().full)
ep.libDestroy()
')

# ---------------------------------------------------------------------------
# Publish into the cache

step "storing the wheel in the cache" "Could not write to $CACHE_ROOT; check free space and permissions, or point DIALSWITCH_CACHE elsewhere."
rm -rf "$OUT_DIR.tmp" "$OUT_DIR"
mkdir -p "$OUT_DIR.tmp"
cp "$BUILT" "$OUT_DIR.tmp/"
{
    printf 'built: %s on %s in %ss\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(uname -n)" "$((SECONDS - START))"
    printf 'interpreter: %s\n' "$PY"
    printf '%s\n' "$KEY_INPUTS"
} >"$OUT_DIR.tmp/build-info.txt"
cp "$LOG" "$OUT_DIR.tmp/build.log"
touch "$OUT_DIR.tmp/.complete"
mv "$OUT_DIR.tmp" "$OUT_DIR"

if [[ ${PJSUA2_KEEP_WORK:-0} != 1 ]]; then
    rm -rf -- "$WORK"
    WORK=""
fi
LOG=""
WHEEL="$OUT_DIR/$(basename "$BUILT")"
log "built $(basename "$WHEEL") in $((SECONDS - START))s"
printf '%s\n' "$WHEEL" >&3
exit 0
}
