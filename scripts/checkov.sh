#!/usr/bin/env bash
# Policy scan of the Bicep templates with checkov, fully offline.
#
# checkov pins old versions of `packaging` (and pycep-parser), which conflict with the dev tools,
# so it lives in its own virtual environment, .venv-iac, created here on first use.
# Usage: scripts/checkov.sh [extra checkov arguments...]
set -euo pipefail

CHECKOV_VERSION="3.3.30"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPO_ROOT}/.venv-iac"
PYTHON="${PYTHON:-python3}"

installed_version() {
    "${VENV}/bin/python" -c 'import importlib.metadata as m; print(m.version("checkov"))' 2>/dev/null || true
}

if [[ ! -x "${VENV}/bin/python" ]]; then
    echo "Creating ${VENV} ..." >&2
    "${PYTHON}" -m venv "${VENV}"
fi

if [[ "$(installed_version)" != "${CHECKOV_VERSION}" ]]; then
    echo "Installing checkov==${CHECKOV_VERSION} into ${VENV} ..." >&2
    "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==${CHECKOV_VERSION}"
fi

cd "${REPO_ROOT}"
output="$(mktemp)"
trap 'rm -f "${output}"' EXIT

# --skip-download: no call to the Prisma Cloud guidelines API, so the scan needs no network.
# Skips are inline in the templates (`//checkov:skip=<ID>:<reason>`), each with its justification.
status=0
"${VENV}/bin/checkov" -d infra --framework bicep --skip-download --compact --quiet "$@" | tee "${output}" \
    || status=$?

# checkov exits 0 when a template does not parse: that file is then simply not scanned. Treat it as a failure.
if grep -Eq 'Parsing errors: [1-9]' "${output}"; then
    echo "checkov could not parse some templates, so they were not scanned (run with -o json for the list)." >&2
    status=1
fi
exit "${status}"
