#!/usr/bin/env bash
# Installs the seven SOAP clients of the interop suite (tests/interop/, run by tests/tests/interop.rs)
# when they are missing; sourced by scripts/test.sh, or run on its own:
#
#   bash scripts/interop.sh
#
# - zeep and suds-community for the very `python3` the tests run (pip; a pyenv interpreter is not
#   Debian's), installed only when `import` fails;
# - PHP's SoapClient (php-cli, php-soap), SOAP::Lite (libsoap-lite-perl), gSOAP (gsoap,
#   libgsoap-dev), JAX-WS RI (jaxws; OpenJDK's javac from default-jdk-headless when missing) and
#   Node.js with npm: Debian packages, with apt-get, only those missing;
# - node-soap: `npm ci` in tests/interop/node (its package-lock.json pins the version) when its
#   node_modules is missing.
#
# With BROKER_SKIP_INTEROP=1 it installs nothing (and the suite's tests say they were skipped).
# Idempotent: a second run installs nothing and prints nothing.

interop_log() { printf 'scripts/interop.sh: %s\n' "$*" >&2; }

interop_install() {
    if [[ "${BROKER_SKIP_INTEROP:-}" == 1 ]]; then
        interop_log "BROKER_SKIP_INTEROP=1: not installing the interop clients"
        return 0
    fi
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

    # Debian packages: a command or file each stands for.
    local -a wanted=()
    command -v php >/dev/null 2>&1 || wanted+=(php-cli)
    php -m 2>/dev/null | grep -qx soap || wanted+=(php-soap)
    perl -MSOAP::Lite -e1 >/dev/null 2>&1 || wanted+=(libsoap-lite-perl)
    command -v wsdl2h >/dev/null 2>&1 || wanted+=(gsoap)
    [[ -e /usr/include/stdsoap2.h ]] || wanted+=(libgsoap-dev)
    command -v wsimport >/dev/null 2>&1 || wanted+=(jaxws)
    command -v javac >/dev/null 2>&1 || wanted+=(default-jdk-headless)
    command -v node >/dev/null 2>&1 || wanted+=(nodejs)
    command -v npm >/dev/null 2>&1 || wanted+=(npm)
    if ((${#wanted[@]})); then
        if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
            interop_log "installing ${wanted[*]}"
            apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${wanted[@]}" >/dev/null \
                || interop_log "apt-get could not install ${wanted[*]}; those clients' tests will fail"
        else
            interop_log "missing ${wanted[*]} and no apt-get as root; those clients' tests will fail"
        fi
    fi

    # Python clients, for the python3 the tests run.
    local -a pip_wanted=()
    python3 -c 'import zeep' >/dev/null 2>&1 || pip_wanted+=(zeep)
    python3 -c 'import suds' >/dev/null 2>&1 || pip_wanted+=(suds-community)
    if ((${#pip_wanted[@]})); then
        interop_log "installing ${pip_wanted[*]} with pip"
        python3 -m pip --version >/dev/null 2>&1 || python3 -m ensurepip --upgrade >/dev/null 2>&1 || true
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check "${pip_wanted[@]}" \
            || PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${pip_wanted[@]}" \
            || interop_log "pip could not install ${pip_wanted[*]}; those clients' tests will fail"
    fi

    # node-soap, pinned by the lock file.
    if [[ ! -d "$root/tests/interop/node/node_modules/soap" ]] && command -v npm >/dev/null 2>&1; then
        interop_log "installing node-soap (npm ci in tests/interop/node)"
        (cd "$root/tests/interop/node" && npm ci --silent --no-audit --no-fund >/dev/null 2>&1) \
            || interop_log "npm could not install node-soap; its test will fail"
    fi
}

# Run on its own (not sourced): install now.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    interop_install
fi
