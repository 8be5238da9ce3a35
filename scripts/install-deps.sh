#!/usr/bin/env bash
# Install the Debian packages cmcgate's tests and demo run for real, when any is missing.
# Idempotent and quick when everything is present (one dpkg-query).
# python3-venv: scripts/bootstrap-venv.sh falls back to /usr/bin/python3 (Debian 12: 3.11)
# when there is no pyenv; its venv needs ensurepip. Nothing is compiled (every dependency,
# python-pkcs11 included, has cp311 manylinux wheels), so no python3-dev or compiler.
# curl, jq: docs/ra-api.md talks to the RA REST API with them, and a test runs it as pasted.
set -euo pipefail
packages=(softhsm2 opensc slapd ldap-utils openssl python3-venv gpgsm curl jq)
missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo "installing Debian packages: ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
