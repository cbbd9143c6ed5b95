#!/usr/bin/env bash
# A private OpenLDAP directory for the tests: its own slapd on a free port of 127.0.0.1, its own
# configuration and data directory under /tmp, a small seeded tree, no system service, gone when
# the tests are.
#
# Sourced by scripts/test.sh:
#
#   . scripts/slapd.sh
#   slapd_private_start       # exports BROKER_TEST_LDAP (and _DIR)
#   trap slapd_private_stop EXIT
#
# or run by hand (a test that takes its directory down and up again starts one of its own so):
#
#   eval "$(bash scripts/slapd.sh start)"      # prints the export lines
#   bash scripts/slapd.sh stop "$BROKER_TEST_LDAP_DIR"
#   bash scripts/slapd.sh down "$BROKER_TEST_LDAP_DIR"   # stop slapd, keep its data
#   bash scripts/slapd.sh up "$BROKER_TEST_LDAP_DIR"     # start it again on the same port
#
# What it exports:
#   BROKER_TEST_LDAP      ldap://127.0.0.1:PORT
#   BROKER_TEST_LDAP_DIR  the scratch directory (slapd.conf, data, pid file, log)
#
# The tree (suffix dc=example,dc=com; manager cn=admin,dc=example,dc=com, password "secret"):
#   ou=people    uid=ann (password ann-pw, a binary jpegPhoto), uid=bob (bob-pw), uid=carol (carol-pw,
#                whose unpaged searches stop at 1 000 entries, as everyone's do on Active Directory)
#   ou=groups    cn=staff (member ann and bob)
#   ou=paged     25 entries cn=p01 … cn=p25
#   ou=bulk      10 000 entries cn=b00001 … cn=b10000 (slapadd takes well under a second)
#   ou=scratch   empty: tests add, change and delete their own entries under it
# Bound users may write, anyone may read (and authenticate).
#
# slapd comes from the Debian package `slapd` (and the clients from `ldap-utils`), installed with
# apt-get (root only) when missing, its own service neither configured nor started.

# shellcheck source=scripts/ports.sh
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

slapd_log() { printf 'scripts/slapd.sh: %s\n' "$*" >&2; }

SLAPD_SUFFIX="dc=example,dc=com"

slapd_install() {
    if command -v slapd >/dev/null 2>&1 || [[ -x /usr/sbin/slapd ]]; then
        return 0
    fi
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        slapd_log "slapd is not installed and I cannot install it (needs root and apt-get):"
        slapd_log "install the Debian packages 'slapd' and 'ldap-utils' and run again"
        return 1
    fi
    slapd_log "installing OpenLDAP (apt-get install slapd ldap-utils)"
    # No default database, no service started: we only want the binaries.
    printf 'slapd slapd/no_configuration boolean true\n' | debconf-set-selections 2>/dev/null || true
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slapd ldap-utils >/dev/null ||
        { slapd_log "apt-get install slapd ldap-utils failed"; return 1; }
}

slapd_bin() { command -v slapd 2>/dev/null || printf '/usr/sbin/slapd\n'; }
slapadd_bin() { command -v slapadd 2>/dev/null || printf '/usr/sbin/slapadd\n'; }

# The seed tree as LDIF on stdout.
slapd_seed_ldif() {
    local photo i n
    # A JPEG's first bytes and some that are not UTF-8: a binary value must arrive intact.
    photo="$(printf '\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x80\x81\xfe' | base64 -w0)"
    cat <<EOF
dn: $SLAPD_SUFFIX
objectClass: top
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,$SLAPD_SUFFIX
objectClass: organizationalUnit
ou: people

dn: uid=ann,ou=people,$SLAPD_SUFFIX
objectClass: inetOrgPerson
uid: ann
cn: Ann Archer
sn: Archer
mail: ann@example.com
telephoneNumber: +1 555 0101
userPassword: ann-pw
jpegPhoto:: $photo

dn: uid=bob,ou=people,$SLAPD_SUFFIX
objectClass: inetOrgPerson
uid: bob
cn: Bob Baker
sn: Baker
mail: bob@example.com
userPassword: bob-pw

dn: uid=carol,ou=people,$SLAPD_SUFFIX
objectClass: inetOrgPerson
uid: carol
cn: Carol Cook
sn: Cook
userPassword: carol-pw

dn: ou=groups,$SLAPD_SUFFIX
objectClass: organizationalUnit
ou: groups

dn: cn=staff,ou=groups,$SLAPD_SUFFIX
objectClass: groupOfNames
cn: staff
member: uid=ann,ou=people,$SLAPD_SUFFIX
member: uid=bob,ou=people,$SLAPD_SUFFIX

dn: ou=scratch,$SLAPD_SUFFIX
objectClass: organizationalUnit
ou: scratch

dn: ou=paged,$SLAPD_SUFFIX
objectClass: organizationalUnit
ou: paged

EOF
    for ((i = 1; i <= 25; i++)); do
        printf -v n '%02d' "$i"
        printf 'dn: cn=p%s,ou=paged,%s\nobjectClass: device\ncn: p%s\n\n' "$n" "$SLAPD_SUFFIX" "$n"
    done
    printf 'dn: ou=bulk,%s\nobjectClass: organizationalUnit\nou: bulk\n\n' "$SLAPD_SUFFIX"
    for ((i = 1; i <= 10000; i++)); do
        printf -v n '%05d' "$i"
        printf 'dn: cn=b%s,ou=bulk,%s\nobjectClass: device\ncn: b%s\ndescription: bulk entry %s\n\n' \
            "$n" "$SLAPD_SUFFIX" "$n" "$n"
    done
}

# Write slapd.conf for the directory DIR.
slapd_write_conf() {
    local dir="$1"
    cat >"$dir/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload syncprov
pidfile $dir/slapd.pid
argsfile $dir/slapd.args
sizelimit unlimited
timelimit unlimited

database mdb
maxsize 1073741824
suffix "$SLAPD_SUFFIX"
rootdn "cn=admin,$SLAPD_SUFFIX"
rootpw secret
directory $dir/data
index objectClass eq
index cn,uid eq
index entryCSN,entryUUID eq
# carol meets the limits an Active Directory puts on everyone: an unpaged search stops at 1 000
# entries (sizeLimitExceeded), a paged one returns them all (MaxPageSize).
limits dn.exact="uid=carol,ou=people,$SLAPD_SUFFIX" size.soft=1000 size.hard=1000 size.prtotal=unlimited
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users write by * read
# Content synchronisation (RFC 4533): a refreshAndPersist search stays open until it is abandoned.
overlay syncprov
EOF
}

# Start slapd for DIR on its port and wait until it answers. slapd stays in the foreground (`-d 0`:
# no fork, fatal errors on stderr) as a background job of its own session, its output in
# DIR/slapd.log, so that a failure to start says why there.
slapd_up() {
    local dir="$1" port pid
    port="$(cat "$dir/port")"
    setsid "$(slapd_bin)" -f "$dir/slapd.conf" -h "ldap://127.0.0.1:$port/" -d 0 \
        </dev/null >>"$dir/slapd.log" 2>&1 &
    pid=$!
    local tries=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        tries=$((tries + 1))
        if ! kill -0 "$pid" 2>/dev/null || ((tries > 150)); then
            slapd_log "slapd did not start on 127.0.0.1:$port: $(tail -n 3 "$dir/slapd.log" | tr '\n' ' ')"
            kill "$pid" 2>/dev/null || true
            return 1
        fi
        sleep 0.1
    done
    # slapd writes its pid file itself; wait for it so that slapd_down finds it.
    tries=0
    until [[ -s "$dir/slapd.pid" ]] || ((tries > 50)); do
        sleep 0.05
        tries=$((tries + 1))
    done
    [[ -s "$dir/slapd.pid" ]] || printf '%s\n' "$pid" >"$dir/slapd.pid"
}

# Stop DIR's slapd (its data stays) and wait until it is gone.
slapd_down() {
    local dir="$1" pid tries=0
    [[ -f "$dir/slapd.pid" ]] || return 0
    pid="$(cat "$dir/slapd.pid")"
    kill "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null && ((tries < 100)); do
        sleep 0.05
        tries=$((tries + 1))
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/slapd.pid"
}

# Start a private directory and export its URL. A no-op when BROKER_TEST_LDAP is already set (a
# directory of the caller's own).
slapd_private_start() {
    if [[ -n "${BROKER_TEST_LDAP:-}" ]]; then
        return 0
    fi
    slapd_install || return 1
    local dir port
    dir="$(mktemp -d /tmp/broker-slapd.XXXXXX)" || return 1
    mkdir -p "$dir/data"
    slapd_write_conf "$dir"
    if ! slapd_seed_ldif | "$(slapadd_bin)" -q -f "$dir/slapd.conf" >>"$dir/slapd.log" 2>&1; then
        slapd_log "slapadd failed (see $dir/slapd.log)"
        return 1
    fi
    # A free port can be taken between the check and slapd's bind: a few tries, each on a new one.
    local attempt=0
    while :; do
        port="$(free_port)" || { slapd_log "no free port found"; rm -rf "$dir"; return 1; }
        printf '%s\n' "$port" >"$dir/port"
        slapd_up "$dir" && break
        attempt=$((attempt + 1))
        if ((attempt >= 3)); then
            slapd_log "giving up after $attempt attempts (see $dir/slapd.log)"
            return 1
        fi
    done
    SLAPD_PRIVATE_DIR="$dir"
    export BROKER_TEST_LDAP="ldap://127.0.0.1:$port"
    export BROKER_TEST_LDAP_DIR="$dir"
    slapd_log "slapd $("$(slapd_bin)" -VV 2>&1 | awk 'NR==1{print $4}') on 127.0.0.1:$port (data in $dir)"
}

# Stop the directory slapd_private_start started and remove its directory. Safe to call twice.
slapd_private_stop() {
    local dir="${1:-${SLAPD_PRIVATE_DIR:-}}"
    [[ -n "$dir" && -d "$dir" ]] || return 0
    slapd_down "$dir"
    rm -rf "$dir"
    SLAPD_PRIVATE_DIR=""
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    case "${1:-}" in
    start)
        unset BROKER_TEST_LDAP
        slapd_private_start
        printf 'export BROKER_TEST_LDAP=%q BROKER_TEST_LDAP_DIR=%q\n' "$BROKER_TEST_LDAP" "$BROKER_TEST_LDAP_DIR"
        ;;
    stop) slapd_private_stop "${2:?usage: slapd.sh stop DIR}" ;;
    down) slapd_down "${2:?usage: slapd.sh down DIR}" ;;
    up) slapd_up "${2:?usage: slapd.sh up DIR}" ;;
    *)
        printf 'usage: %s start | stop DIR | down DIR | up DIR\n' "$0" >&2
        exit 2
        ;;
    esac
fi
