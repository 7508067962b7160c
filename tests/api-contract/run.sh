#!/usr/bin/env bash
# The HTTP API against its document, from outside: the document is checked by a real OpenAPI
# validator (openapi-spec-validator), then schemathesis sends what the document allows — and what
# it does not — to a `gatehouse sandbox` host for a bounded time, checking every answer's status,
# content type, headers and body against the document and that nothing answers 5xx.
#
# Needs python3 (venv, pip; PyPI reachable the first time) and the workspace built
# (`cargo build --workspace`). Time bound: API_CONTRACT_SECONDS (default 120).
#
# Left out: schemathesis's `positive_data_acceptance` check. It expects every schema-valid request
# to be accepted, but a payment gateway refuses schema-valid commands on business rules the
# document cannot state (a currency this provider does not take, an amount above the account's
# limit, a report name this plugin does not know) with 422, which the document lists.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/api-contract-venv
if [ ! -x "$venv/bin/st" ] || [ ! -x "$venv/bin/openapi-spec-validator" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    schemathesis==4.32.5 openapi-spec-validator==0.9.0
fi

echo "-- openapi-spec-validator"
"$venv/bin/openapi-spec-validator" host/service/openapi.json

cargo build --quiet --workspace
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/debug/gatehouse sandbox --folder "$work/sandbox" --listen "127.0.0.1:$port" >"$work/sandbox.log" 2>&1 &
host=$!
cleanup() {
  kill "$host" 2>/dev/null || true
  wait "$host" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
if ! curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null; then
  echo "the sandbox host did not become ready:" >&2
  cat "$work/sandbox.log" >&2
  exit 1
fi

echo "-- schemathesis against the sandbox (127.0.0.1:$port, ${API_CONTRACT_SECONDS:-120} s)"
status=0
# From the scratch folder: schemathesis keeps a `.schemathesis/` cache in its working folder.
venv_bin="$PWD/$venv/bin"
(cd "$work" && "$venv_bin/st" run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer sandbox-key" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-time "${API_CONTRACT_SECONDS:-120}" \
  --seed "${API_CONTRACT_SEED:-20261201}" \
  --workers 1 --request-timeout 10 --no-color \
  --generation-database none) || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis found answers the document does not allow (above); the host's log:" >&2
  tail -50 "$work/sandbox.log" >&2
  # A host that crashed under the run is the worst finding: say so.
  kill -0 "$host" 2>/dev/null || echo "the sandbox host is no longer running" >&2
fi
exit "$status"
