#!/usr/bin/env bash
# Installs the third-party STOMP clients used by the interop smoke tests and the
# browser tests, the chat example's and the admin dashboard's client libraries, and
# (on Debian, when missing) the Chromium the browser tests drive, curl, and promtool
# (Debian's prometheus package) for the admin tests.
# Paths are relative to the repository root, so the script moves there first.
# Safe to re-run: pip --upgrade --target and npm ci both rebuild their target
# from the pinned manifests each time.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The browser tests (tests/browser.rs) drive Debian's chromium, or the browser named
# by STOMPBOX_CHROMIUM. Installed with apt (sudo when not root) only if missing.
chromium=${STOMPBOX_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
    if command -v apt-get >/dev/null; then
        echo "install-interop: chromium (Debian package) for the browser tests"
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -q >/dev/null
        $sudo apt-get install -y -q chromium >/dev/null
    else
        echo "install-interop: no $chromium and no apt-get: install Chromium and set STOMPBOX_CHROMIUM" >&2
        exit 1
    fi
fi

# tests/admin.rs calls every admin endpoint with curl and checks /metrics with
# `promtool check metrics`; both from Debian, installed only if missing.
debs=()
command -v curl >/dev/null || debs+=(curl)
command -v promtool >/dev/null || debs+=(prometheus)
if [ ${#debs[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null; then
        echo "install-interop: ${debs[*]} (Debian packages) for the admin tests"
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -q >/dev/null
        $sudo apt-get install -y -q --no-install-recommends "${debs[@]}" >/dev/null
    else
        echo "install-interop: no ${debs[*]} and no apt-get: install curl and promtool" >&2
        exit 1
    fi
fi

# --target keeps stomp.py out of the system site-packages; the smoke test is
# run with PYTHONPATH=.interop/python. --upgrade makes re-runs replace the
# previous install instead of warning that the target already exists.
echo "install-interop: stomp.py -> .interop/python"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --upgrade --target .interop/python -r tests/interop/requirements.txt

# npm ci installs exactly what package-lock.json records, so every machine
# tests against the same client versions.
echo "install-interop: @stomp/stompjs + ws -> tests/interop/node_modules"
# Its stdout is only the "added N packages" summary; errors go to stderr.
npm ci --prefix tests/interop --no-audit --no-fund >/dev/null

# The browser tests (tests/browser.rs): playwright-core drives the system's
# Chromium (Debian's chromium; playwright-core downloads no browser), and the
# pages load the stompjs UMD bundle from these node_modules over http from
# stompbox itself.
echo "install-interop: playwright-core + @stomp/stompjs -> tests/browser/node_modules"
npm ci --prefix tests/browser --no-audit --no-fund >/dev/null
echo "install-interop: @stomp/stompjs -> examples/chat/public/node_modules"
npm ci --prefix examples/chat/public --no-audit --no-fund >/dev/null

# The admin dashboard's libraries (stompjs, uPlot), served by the admin listener from
# dashboard/node_modules: nothing is fetched at run time.
echo "install-interop: @stomp/stompjs + uplot -> dashboard/node_modules"
npm ci --prefix dashboard --no-audit --no-fund >/dev/null

echo "install-interop: done"
