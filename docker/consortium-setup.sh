#!/usr/bin/env bash
# One-shot setup of a MedBlock consortium, run by the compose file's `consortium-setup` service in the
# apache/kafka image (it uses the image's kafka-*.sh tools). The gateways start only after it exits 0.
#
#   1. waits for MongoDB (the `mongodb` service's healthcheck initiates the replica set rs0, and the
#      service is healthy only once rs0 has a writable primary; here we check it answers on the network);
#   2. waits until all Kafka brokers are registered (a replication factor of 3 needs all three);
#   3. creates one topic per ledger channel, as the ledger protocol requires: ONE partition (total
#      order), replication factor 3, min.insync.replicas=2, unclean.leader.election.enable=false,
#      infinite retention (retention.ms=-1, retention.bytes=-1, cleanup.policy=delete);
#   4. checks every channel topic (new or pre-existing) has exactly those settings, and fails otherwise:
#      a topic that does not is never altered in place, because the ledger must not run on it.
#
# Safe to run again (`docker compose run --rm consortium-setup`): existing, correct topics are kept.
# Environment (defaults in brackets):
#   BOOTSTRAP_SERVERS     [kafka-1:9092,kafka-2:9092,kafka-3:9092]
#   EXPECTED_BROKERS      [3]          brokers that must be registered before topics are created
#   LEDGER_CHANNELS       [consortium] comma-separated channel names; a channel's topic has its name
#   REPLICATION_FACTOR    [3]
#   MIN_INSYNC_REPLICAS   [2]
#   MONGODB_ADDRESS       [mongodb:27017]  empty to skip the MongoDB check
#   SETUP_TIMEOUT_SECONDS [300]        for all the waiting together
#   KAFKA_BIN             [/opt/kafka/bin]
set -euo pipefail

BOOTSTRAP_SERVERS=${BOOTSTRAP_SERVERS:-kafka-1:9092,kafka-2:9092,kafka-3:9092}
EXPECTED_BROKERS=${EXPECTED_BROKERS:-3}
LEDGER_CHANNELS=${LEDGER_CHANNELS:-consortium}
REPLICATION_FACTOR=${REPLICATION_FACTOR:-3}
MIN_INSYNC_REPLICAS=${MIN_INSYNC_REPLICAS:-2}
MONGODB_ADDRESS=${MONGODB_ADDRESS-mongodb:27017}
SETUP_TIMEOUT_SECONDS=${SETUP_TIMEOUT_SECONDS:-300}
KAFKA_BIN=${KAFKA_BIN:-/opt/kafka/bin}
export KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx256m}

# The settings every channel topic must have (the same ones src/adapters/kafka/topics.ts checks).
CHANNEL_CONFIG=(
  "min.insync.replicas=${MIN_INSYNC_REPLICAS}"
  "unclean.leader.election.enable=false"
  "retention.ms=-1"
  "retention.bytes=-1"
  "cleanup.policy=delete"
)

log() { printf '[consortium-setup] %s\n' "$*"; }
die() { printf '[consortium-setup] ERROR: %s\n' "$*" >&2; exit 1; }

deadline=$((SECONDS + SETUP_TIMEOUT_SECONDS))

# wait_until <description> <command…>: runs the command every 2 s until it succeeds or time is up.
wait_until() {
  local what=$1; shift
  log "waiting for ${what}"
  until "$@"; do
    if ((SECONDS >= deadline)); then die "gave up waiting for ${what} after ${SETUP_TIMEOUT_SECONDS} s"; fi
    sleep 2
  done
  log "ok: ${what}"
}

mongodb_answers() {
  local host=${MONGODB_ADDRESS%:*} port=${MONGODB_ADDRESS##*:}
  timeout 3 bash -c "exec 3<>/dev/tcp/${host}/${port}" 2>/dev/null
}

registered_brokers() {
  # One line per registered broker: "kafka-1:9092 (id: 1 rack: null isFenced: false) -> (".
  timeout 60 "${KAFKA_BIN}/kafka-broker-api-versions.sh" --bootstrap-server "${BOOTSTRAP_SERVERS}" 2>/dev/null \
    | grep -c ' (id: [0-9]*' || true
}

all_brokers_registered() {
  local n
  n=$(registered_brokers)
  if ((n < EXPECTED_BROKERS)); then log "  ${n}/${EXPECTED_BROKERS} brokers registered"; return 1; fi
}

# check_channel_topic <topic>: prints what is wrong with the topic, if anything.
check_channel_topic() {
  local topic=$1 describe configs setting name expected actual partitions replicas isr
  describe=$("${KAFKA_BIN}/kafka-topics.sh" --bootstrap-server "${BOOTSTRAP_SERVERS}" --describe --topic "${topic}")
  partitions=$(grep -o 'PartitionCount: *[0-9]*' <<<"${describe}" | grep -o '[0-9]*$' || true)
  replicas=$(grep -o 'ReplicationFactor: *[0-9]*' <<<"${describe}" | grep -o '[0-9]*$' || true)
  [[ ${partitions} == 1 ]] || echo "it has ${partitions:-?} partitions, a channel needs exactly 1 (total order)"
  [[ ${replicas} == "${REPLICATION_FACTOR}" ]] || echo "its replication factor is ${replicas:-?}, expected ${REPLICATION_FACTOR}"
  isr=$(grep -o 'Isr: *[0-9,]*' <<<"${describe}" | head -n 1 | grep -o '[0-9,]*$' || true)
  if [[ -n ${isr} ]] && (($(tr ',' '\n' <<<"${isr}" | grep -c .) < MIN_INSYNC_REPLICAS)); then
    echo "only replicas ${isr} are in sync, fewer than min.insync.replicas=${MIN_INSYNC_REPLICAS}"
  fi
  # Effective values (topic override or broker default): "  retention.ms=-1 sensitive=false synonyms={…}".
  configs=$("${KAFKA_BIN}/kafka-configs.sh" --bootstrap-server "${BOOTSTRAP_SERVERS}" --describe --all \
    --entity-type topics --entity-name "${topic}" | sed -n 's/^ *\([a-z.]*\)=\([^ ]*\) sensitive=.*/\1=\2/p')
  for setting in "${CHANNEL_CONFIG[@]}"; do
    name=${setting%%=*} expected=${setting#*=}
    actual=$(grep -m1 "^${name}=" <<<"${configs}" | cut -d= -f2- || true)
    [[ ${actual} == "${expected}" ]] || echo "${name} is ${actual:-unset}, expected ${expected}"
  done
}

ensure_channel_topic() {
  local topic=$1 problems config_args=()
  for setting in "${CHANNEL_CONFIG[@]}"; do config_args+=(--config "${setting}"); done
  "${KAFKA_BIN}/kafka-topics.sh" --bootstrap-server "${BOOTSTRAP_SERVERS}" --create --if-not-exists \
    --topic "${topic}" --partitions 1 --replication-factor "${REPLICATION_FACTOR}" "${config_args[@]}"
  problems=$(check_channel_topic "${topic}")
  if [[ -n ${problems} ]]; then
    die "topic '${topic}' cannot be used as a ledger channel:"$'\n'"${problems}"$'\n'"Delete it or choose another channel name; it is not changed in place."
  fi
  log "channel '${topic}': 1 partition, replication factor ${REPLICATION_FACTOR}, $(IFS=' '; echo "${CHANNEL_CONFIG[*]}")"
  # "Partition: 0  Leader: 2  Replicas: 2,3,1  Isr: 2,3,1 …"
  "${KAFKA_BIN}/kafka-topics.sh" --bootstrap-server "${BOOTSTRAP_SERVERS}" --describe --topic "${topic}" \
    | grep -o 'Partition: .*Isr: [0-9,]*' | tr -s '\t ' ' ' | sed "s/^/[consortium-setup]   /" || true
}

# Channel names, checked before any waiting (a channel's topic has the channel's name, unchanged).
channels=()
IFS=',' read -r -a names <<<"${LEDGER_CHANNELS}"
for name in "${names[@]}"; do
  name=${name//[[:space:]]/}
  [[ -z ${name} ]] && continue
  [[ ${name} =~ ^[A-Za-z0-9._-]{1,249}$ && ${name} != __* && ${name} != . && ${name} != .. ]] \
    || die "invalid channel name '${name}': use 1-249 of [A-Za-z0-9._-], not starting with __"
  channels+=("${name}")
done
((${#channels[@]} > 0)) || die "LEDGER_CHANNELS names no channel"

log "Kafka at ${BOOTSTRAP_SERVERS}; channels: ${channels[*]}"
if [[ -n ${MONGODB_ADDRESS} ]]; then
  wait_until "MongoDB at ${MONGODB_ADDRESS}" mongodb_answers
fi
wait_until "${EXPECTED_BROKERS} Kafka brokers" all_brokers_registered

for channel in "${channels[@]}"; do
  ensure_channel_topic "${channel}"
done
log "done"
