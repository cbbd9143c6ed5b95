#!/usr/bin/env bash
# The project's one test command:
#
#   bash scripts/test.sh [extra cargo test arguments...]
#
# 1. Makes sure what the end-to-end tests need is installed: python3 with zeep (the third-party
#    SOAP client of tests/tests/zeep_client.rs). It installs zeep for the very `python3` the tests
#    run (which may be a pyenv interpreter rather than Debian's), only when it is missing.
# 2. Starts a private PostgreSQL cluster for the PostgreSQL store's tests (scripts/postgres.sh):
#    a temporary data directory, a free port on 127.0.0.1, no system service; the Debian package
#    `postgresql` is installed with apt-get first when no initdb is found. Its URL is exported as
#    COOKIE_STORE_TEST_PG, and it is stopped and removed when this script exits, however the tests
#    went. With COOKIE_STORE_TEST_PG already set, that server is used instead and nothing is started.
#    Likewise a private OpenLDAP directory for the ldap adapter's tests (scripts/slapd.sh, the
#    Debian packages `slapd` and `ldap-utils` installed when missing, a small seeded tree):
#    BROKER_TEST_LDAP, stopped and removed on exit; an already set BROKER_TEST_LDAP is used as is.
#    And the seven SOAP clients of the interop suite (scripts/interop.sh: zeep, suds, node-soap,
#    PHP SoapClient, SOAP::Lite, gSOAP, JAX-WS), each only when missing; BROKER_SKIP_INTEROP=1
#    skips installing and running them.
#    And Chromium (the Debian package `chromium`), the headless browser of the web console's test
#    (tests/tests/console.rs), when no chromium is found.
# 3. Builds every binary of the workspace (the tests start the real `broker` binary), and the
#    broker with the `otlp` feature as `broker-otlp`.
# 4. Runs the whole workspace's tests, passing extra arguments through to `cargo test`.
#
# Idempotent: a second run installs nothing and prints nothing about installing.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/postgres.sh
. scripts/postgres.sh
# shellcheck source=scripts/slapd.sh
. scripts/slapd.sh
# shellcheck source=scripts/interop.sh
. scripts/interop.sh

log() { printf 'scripts/test.sh: %s\n' "$*" >&2; }

have_zeep() { python3 -c 'import zeep' >/dev/null 2>&1; }

install_zeep() {
    if ! command -v python3 >/dev/null 2>&1; then
        log "python3 is not installed; the zeep client test will fail"
        return 0
    fi
    have_zeep && return 0
    local exe
    exe="$(python3 -c 'import sys; print(sys.executable)')"
    log "installing zeep for $exe"
    # Debian's package only serves Debian's own interpreter.
    if [[ "$exe" == /usr/bin/python3* ]] && command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
        if ! dpkg -s python3-zeep >/dev/null 2>&1; then
            apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-zeep >/dev/null || true
        fi
        have_zeep && return 0
    fi
    # Anything else (pyenv, a venv, or apt did not help): pip for that very interpreter.
    python3 -m pip --version >/dev/null 2>&1 || python3 -m ensurepip --upgrade >/dev/null 2>&1 || true
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check zeep \
        || PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --user zeep \
        || PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --break-system-packages zeep \
        || true
    if have_zeep; then
        log "zeep installed"
    else
        log "could not install zeep for $exe; the zeep client test will fail"
    fi
}

install_chromium() {
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 && return 0
    if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
        log "installing chromium (the web console's test)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
            || log "apt-get could not install chromium; the web console's test will fail"
    else
        log "no chromium and no apt-get as root; the web console's test will fail"
    fi
}

install_zeep
interop_install
install_chromium
# Whatever happens from here on (failed tests, Ctrl-C), the private cluster goes with us.
trap 'pg_private_stop; slapd_private_stop' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if ! pg_private_start; then
    log "no PostgreSQL for the tests; the PostgreSQL store's tests will fail and say so"
fi
if ! slapd_private_start; then
    log "no slapd for the tests; the LDAP adapter's tests will fail and say so"
fi
# The broker with the OpenTelemetry exporter (tests/tests/otlp.rs) is kept as broker-otlp; then
# the plain broker again. Both builds stay in cargo's cache, so a second run rebuilds neither.
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build -p broker --features otlp --bin broker
rm -f "$target_dir/debug/broker-otlp"
cp "$target_dir/debug/broker" "$target_dir/debug/broker-otlp"
cargo build --workspace --bins
cargo test --workspace "$@"
