# Shared set-up for scripts/test and scripts/demo: the venv, npm packages and an Azurite instance.
# Sourced, not executed. Safe to run twice: installs are skipped when their inputs did not change.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON_BIN="${PYTHON:-python3}"

ensure_venv() {
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$PYTHON_BIN" -m venv .venv
  fi
  local stamp=.venv/.requirements.sha256
  local want
  want="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> installing Python packages"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
    echo "$want" > "$stamp"
  fi
}

ensure_node_modules() {
  local stamp=node_modules/.package-lock.sha256
  local want
  want="$(sha256sum package-lock.json | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> installing npm packages (Azurite)"
    npm ci --no-audit --no-fund --silent
    echo "$want" > "$stamp"
  fi
}

AZURITE_PID=""
AZURITE_DIR=""

stop_azurite() {
  if [ -n "$AZURITE_PID" ] && kill -0 "$AZURITE_PID" 2>/dev/null; then
    kill "$AZURITE_PID" 2>/dev/null || true
    wait "$AZURITE_PID" 2>/dev/null || true
  fi
  [ -n "$AZURITE_DIR" ] && rm -rf "$AZURITE_DIR"
  AZURITE_PID=""
}

start_azurite() {
  local ports
  ports="$(.venv/bin/python -c 'import socket
socks=[socket.socket() for _ in range(3)]
[s.bind(("127.0.0.1",0)) for s in socks]
print(" ".join(str(s.getsockname()[1]) for s in socks))
[s.close() for s in socks]')"
  read -r BLOB_PORT QUEUE_PORT TABLE_PORT <<< "$ports"
  AZURITE_DIR="$(mktemp -d)"
  ./node_modules/.bin/azurite --silent --inMemoryPersistence --disableTelemetry --skipApiVersionCheck --loose \
    --blobHost 127.0.0.1 --blobPort "$BLOB_PORT" --queueHost 127.0.0.1 --queuePort "$QUEUE_PORT" \
    --tableHost 127.0.0.1 --tablePort "$TABLE_PORT" > "$AZURITE_DIR/azurite.log" 2>&1 &
  AZURITE_PID=$!
  trap stop_azurite EXIT
  local port
  for port in "$BLOB_PORT" "$QUEUE_PORT" "$TABLE_PORT"; do
    for _ in $(seq 1 300); do
      if .venv/bin/python -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$port)))"; then
        break
      fi
      kill -0 "$AZURITE_PID" 2>/dev/null || { cat "$AZURITE_DIR/azurite.log"; echo "Azurite exited" >&2; return 1; }
      sleep 0.1
    done
  done
  local account=devstoreaccount1
  local key="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
  export AZURITE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=$account;AccountKey=$key;BlobEndpoint=http://127.0.0.1:$BLOB_PORT/$account;QueueEndpoint=http://127.0.0.1:$QUEUE_PORT/$account;TableEndpoint=http://127.0.0.1:$TABLE_PORT/$account;"
  echo "==> Azurite running (pid $AZURITE_PID)"
}

# The sync-health page's browser test drives Debian's chromium through chromedriver. Installed when missing
# (CI runs as root); `apt-get update` only when the package lists do not know the packages yet.
ensure_chromium() {
  if command -v chromium > /dev/null && command -v chromedriver > /dev/null; then
    return 0
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo > /dev/null; then
      sudo="sudo -n"
    else
      echo "chromium and chromium-driver are missing and this user cannot install them (apt-get needs root)" >&2
      return 1
    fi
  fi
  echo "==> installing chromium and chromium-driver (apt-get)"
  if ! apt-cache show chromium-driver > /dev/null 2>&1; then
    $sudo apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver > /dev/null
}
