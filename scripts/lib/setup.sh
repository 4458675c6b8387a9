# Shared by scripts/start and scripts/test (sourced from the project root, not run on its own).
#
# Each step installs only what is missing or changed, prints one line per thing it installs and nothing
# when it is already there. A second run therefore needs no network: scripts/start must work on an
# offline laptop when .venv is complete, and the README sends users to it when the service is down.

STAMP=.venv/.nanogpt-companion-installed
# setuptools announces every editable install with an "InformationOnly" block (about same-named folders
# in the working directory; ours is plugin/, so it does not apply). Newer pip prints it even with
# --quiet. Only that message is silenced, for pip and its build subprocess; every other warning stays.
QUIET_EDITABLE_NOTICE="ignore:Editable installation:UserWarning"

# The Python and pyproject.toml (version, dependencies, package layout) the venv was installed from.
# Source files are not in it: the install is editable, so code changes need no reinstall.
project_fingerprint() {
    .venv/bin/python -c '
import hashlib, pathlib, sys
digest = hashlib.sha256(pathlib.Path("pyproject.toml").read_bytes())
digest.update(sys.version.encode())
print(digest.hexdigest())'
}

# ensure_project_installed [EXTRA]: the companion (and the optional-dependency group EXTRA, e.g. "test")
# installed editable into ./.venv.
ensure_project_installed() {
    local extra="${1:-}" python="${PYTHON:-python3}"
    if [ ! -x .venv/bin/python ]; then
        echo "Creating the Python environment .venv"
        "$python" -m venv .venv
    fi
    if ! .venv/bin/python -c '' 2>/dev/null; then
        echo "error: .venv/bin/python does not run (was the Python it was made with removed?). Delete .venv and run this again." >&2
        return 1
    fi
    local fingerprint had_fingerprint="" had_extras=""
    fingerprint="$(project_fingerprint)"
    if [ -f "$STAMP" ]; then
        read -r had_fingerprint had_extras <"$STAMP" || true
    fi
    local extras="$had_extras"
    if [ -n "$extra" ] && [[ ",$extras," != *",$extra,"* ]]; then
        extras="${extras:+$extras,}$extra"
    fi
    if [ "$had_fingerprint" = "$fingerprint" ] && [ "$extras" = "$had_extras" ] && [ -x .venv/bin/nanogpt-companion ]; then
        return 0
    fi
    local what="NanoGPT Companion and its Python dependencies"
    [ -n "$extras" ] && what="NanoGPT Companion with its [$extras] dependencies"
    local why="pyproject.toml changed"
    if [ -z "$had_fingerprint" ] || [ ! -x .venv/bin/nanogpt-companion ]; then why="first install"
    elif [ "$had_fingerprint" = "$fingerprint" ]; then why="new dependency group"
    fi
    echo "Installing $what into .venv ($why)"
    local spec="."
    [ -n "$extras" ] && spec=".[$extras]"
    if ! PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}$QUIET_EDITABLE_NOTICE" \
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"; then
        if [ -n "$had_fingerprint" ] && [ -x .venv/bin/nanogpt-companion ]; then
            echo "warning: could not install the changed dependencies (no network?); going on with the ones installed before." >&2
            return 0
        fi
        echo "error: could not install $what; pip said why above." >&2
        return 1
    fi
    # The service runs with -OO (plugin/nanogpt_companion/launch.py): compile its code at that level once, here,
    # so that no start compiles it again (a start may not write bytecode: PYTHONDONTWRITEBYTECODE, read-only dirs).
    .venv/bin/python -OO -m compileall -q -j0 .venv/lib/python3*/site-packages plugin >/dev/null 2>&1 || true
    printf '%s %s\n' "$fingerprint" "$extras" >"$STAMP"
}

# ensure_chromium: Debian's chromium for the browser tests (never a downloaded browser). The only step
# that changes the system, and only when chromium is missing.
ensure_chromium() {
    [ -x /usr/bin/chromium ] && return 0
    echo "Installing Debian's chromium package for the browser tests (apt-get, needs root or sudo)"
    local sudo=""
    if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
}
