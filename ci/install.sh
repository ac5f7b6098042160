#!/usr/bin/env bash
# Install what the harness needs on a Debian or Ubuntu host, then the harness
# itself into .venv. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    qemu-system-x86          # x86_64 guests (-M microvm)
    qemu-system-arm          # arm64 guests (-M virt)
    gpgv                     # checks the archive's signed indices
    debian-archive-keyring   # the keys those indices are signed with
    bpftool                  # reads kernel BTF for the hook checks
    chromium                 # renders the HTML report in its test
)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing Debian packages: ${missing[*]}"
    $sudo apt-get -o DPkg::Lock::Timeout=600 update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
        "${missing[@]}"
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
echo "installed: $(.venv/bin/harness --version)"
