#!/usr/bin/env bash
# Sourced by scripts/postgres.sh and scripts/slapd.sh.
#
# free_port: a TCP port on 127.0.0.1 that nothing listens on now. The callers retry their server's
# start should someone take it in between.
free_port() {
    local port tries=0
    while ((tries < 100)); do
        port=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
        tries=$((tries + 1))
    done
    return 1
}
