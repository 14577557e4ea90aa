# syntax=docker/dockerfile:1
# otapub: the edge shim (`otapub serve`, under granian) that answers the ESP32 devices from the
# rendered site. The same image builds the site (`otapub build`) and manages devices.
# No secret is baked in: every setting comes from the environment (see .env.example).

# The base is pinned to a patch release; bump it deliberately for Python security releases.
FROM python:3.12.14-slim-trixie AS build
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.12.14-slim-trixie
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# An unprivileged user with a fixed uid, so bind-mounted folders can be given to it.
RUN groupadd --system --gid 10001 otapub \
    && useradd --system --uid 10001 --gid otapub --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin otapub \
    && mkdir -p /data/fleet /data/firmware /data/site /data/state \
    && chown -R otapub:otapub /data
COPY --from=build /install /usr/local
# otapub's default relative paths (fleet, firmware, site, state/…) resolve here, so the seed's
# `--firmware-file firmware/X.bin` style arguments keep working.
WORKDIR /data
USER 10001:10001
EXPOSE 5000
# No curl in the slim image: ask /status with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import json, os, sys, urllib.request; port = os.environ.get('OTA_SERVER_SERVER_PORT') or '5000'; answer = json.load(urllib.request.urlopen('http://127.0.0.1:' + port + '/status', timeout=4)); sys.exit(0 if answer.get('status') == 'ok' else 1)"]
CMD ["otapub", "serve"]
