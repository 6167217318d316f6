#!/usr/bin/env bash
# Validates docs/api/openapi.json against the OpenAPI 3.1 specification
# with the Python `openapi-spec-validator` (an independent check; the
# Rust test crates/vmm/tests/api.rs checks the server against the
# document).
#
#   scripts/check-openapi.sh              # the repository's document
#   scripts/check-openapi.sh other.json
#
# The validator is installed once into a virtualenv (default
# /tmp/alcazar-openapi-venv, or $OPENAPI_VENV) and reused; the first run
# needs PyPI and takes about a minute and a half.
set -euo pipefail
cd "$(dirname "$0")/.."
doc="${1:-docs/api/openapi.json}"
venv="${OPENAPI_VENV:-/tmp/alcazar-openapi-venv}"
version="0.9.0"

if ! "$venv/bin/python" -c "import openapi_spec_validator" 2>/dev/null; then
    echo "check-openapi.sh: installing openapi-spec-validator $version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "openapi-spec-validator==$version"
fi
"$venv/bin/openapi-spec-validator" --schema 3.1 "$doc"
