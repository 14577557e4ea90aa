#!/usr/bin/env bash
# Manage the fleet's devices inside the running otapub container: every argument is passed to
# `otapub device …` there (docker compose exec).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

SERVICE=otapub

usage() {
    cat <<EOF
Usage: $0 COMMAND [ARGUMENTS...]

Runs 'otapub device COMMAND ARGUMENTS...' in the running '${SERVICE}' container.

Commands:
  list                       list the devices
  get MAC                    show one device
  add MAC [OPTIONS]          add a device
  update MAC [OPTIONS]       change a device
  delete MAC                 remove a device

Examples:
  $0 list
  $0 add AA:BB:CC:DD:EE:FF --help
  $0 get AA:BB:CC:DD:EE:FF

Paths such as firmware/PanicButton_v1.2.1.bin are inside the container, where ./firmware is
mounted at /data/firmware (the working folder is /data).
EOF
}

if [ "$#" -eq 0 ]; then
    usage >&2
    exit 2
fi
case "$1" in
    -h | --help | help)
        usage
        exit 0
        ;;
esac

if ! command -v docker >/dev/null 2>&1; then
    echo "error: docker is not installed; see https://docs.docker.com/get-docker/" >&2
    exit 1
fi
if [ -z "$(docker compose ps --status running --quiet "$SERVICE" 2>/dev/null)" ]; then
    echo "error: the '${SERVICE}' container is not running; start it with ./start.sh" >&2
    exit 1
fi

# No pseudo-terminal when input or output is redirected (scripts, pipes).
tty_flag=()
if [ ! -t 0 ] || [ ! -t 1 ]; then
    tty_flag=(-T)
fi
# ${a[@]+...}: an empty array is "unbound" under set -u in bash < 4.4 (macOS).
exec docker compose exec ${tty_flag[@]+"${tty_flag[@]}"} "$SERVICE" otapub device "$@"
