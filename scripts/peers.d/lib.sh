# Helpers for the provisioning steps in scripts/peers.d/ (sourced by scripts/peers.sh).
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
_ferry_apt_updated=""

# apt_need PACKAGE...: install the Debian packages that are not installed yet.
apt_need() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then return 0; fi
    echo "== installing Debian packages: ${missing[*]}"
    if [ -z "$_ferry_apt_updated" ]; then $SUDO apt-get update -q; _ferry_apt_updated=1; fi
    $SUDO apt-get install -y -q "${missing[@]}"
}

# pip_need SPEC COMMAND: install a PyPI package unless COMMAND is already on PATH.
pip_need() {
    local spec=$1 command=$2
    if command -v "$command" >/dev/null 2>&1; then return 0; fi
    echo "== installing PyPI package: $spec"
    # A Debian-managed python refuses plain `pip install` (PEP 668); fall back for that case.
    python3 -m pip install --quiet "$spec" ||
        python3 -m pip install --quiet --break-system-packages "$spec"
    if ! command -v "$command" >/dev/null 2>&1; then
        # Installed, but its script directory is not on PATH (pyenv without a rehash, --user).
        local dir
        # The tests run in another process: link it where PATH looks.
        for dir in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" "$HOME/.local/bin"; do
            if [ -x "$dir/$command" ]; then $SUDO ln -sf "$dir/$command" "/usr/local/bin/$command"; break; fi
        done
    fi
}

# npm_need DIR: `npm ci` in DIR when its node_modules is missing or older than its lockfile.
npm_need() {
    local dir=$1
    if [ -d "$dir/node_modules" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
        return 0
    fi
    echo "== npm ci in $dir"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$dir" --no-audit --no-fund
}
