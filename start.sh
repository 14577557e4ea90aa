#!/usr/bin/env bash
# Start otapub with Docker Compose: check .env, create the data folders, render the site, and
# start the shim in the background.
#   ./start.sh
# First run: creates .env from .env.example and stops, so you can fill in the secrets.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

# Settings (not comments) whose value is still a placeholder: ours, or the seed's old ones.
PLACEHOLDER_LINE='^[[:space:]]*(export[[:space:]]+)?[A-Za-z_][A-Za-z0-9_]*=.*(REPLACE-ME|your-device-secret-key|change-admin-api-key-in-production|change-this-key-in-production)'

if [ ! -f .env ]; then
    if [ ! -f .env.example ]; then
        echo "error: .env.example is missing; restore it from the repository." >&2
        exit 1
    fi
    # The container must be able to write the bind-mounted folders: run it as you, unless
    # you are root (then the image's own unprivileged user, 10001, is kept).
    uid=$(id -u)
    gid=$(id -g)
    if [ "$uid" -eq 0 ]; then
        cp .env.example .env
    else
        sed -e "s/^OTA_UID=.*/OTA_UID=${uid}/" -e "s/^OTA_GID=.*/OTA_GID=${gid}/" .env.example > .env
    fi
    chmod 600 .env
    cat >&2 <<'MSG'
Created .env from .env.example.

Before starting, edit .env and replace every REPLACE-ME value:
  OTA_SERVER_SHARED_SECRET_KEY  the secret compiled into your device firmware
  OTA_SERVER_ADMIN_API_KEY      a long random key, e.g.
                                python3 -c "import secrets; print(secrets.token_urlsafe(32))"
  OTA_SERVER_BASE_URL           the URL devices use to reach this server, e.g. http://192.168.1.20:5000

Then run ./start.sh again.
MSG
    exit 1
fi

if grep -Eq "$PLACEHOLDER_LINE" .env; then
    echo "error: .env still holds placeholder values in:" >&2
    # Print only the names: the values may be secrets.
    grep -E "$PLACEHOLDER_LINE" .env | cut -d= -f1 | sed 's/^[[:space:]]*/  /' >&2
    echo "Replace them (see the comments in .env), then run ./start.sh again." >&2
    exit 1
fi

if ! command -v docker >/dev/null 2>&1; then
    echo "error: docker is not installed; see https://docs.docker.com/get-docker/" >&2
    exit 1
fi
if ! docker compose version >/dev/null 2>&1; then
    echo "error: the Docker Compose plugin (docker compose) is not installed." >&2
    exit 1
fi

mkdir -p fleet firmware site state
if [ "$(id -u)" -eq 0 ]; then
    # Folders made by root: hand the writable ones to the uid the container runs as.
    owner_uid=$(sed -n 's/^OTA_UID=//p' .env | tail -n 1)
    owner_gid=$(sed -n 's/^OTA_GID=//p' .env | tail -n 1)
    chown "${owner_uid:-10001}:${owner_gid:-10001}" fleet site state
fi
if [ -z "$(ls -A fleet)" ]; then
    echo "note: ./fleet is empty: put your fleet YAML there (see README.md), then rebuild with" >&2
    echo "      docker compose run --rm otapub otapub build" >&2
fi

echo "Building the image..."
docker compose build

echo "Rendering the site..."
docker compose run --rm otapub otapub build

echo "Starting the shim..."
docker compose up -d otapub

port=$(sed -n 's/^OTA_PUBLISH_PORT=//p' .env | tail -n 1)
echo
echo "otapub is running: http://localhost:${port:-5000}/status"
echo "  logs:     docker compose logs -f otapub"
echo "  devices:  ./manage-devices.sh list"
echo "  rebuild:  docker compose run --rm otapub otapub build"
echo "  stop:     docker compose down"
