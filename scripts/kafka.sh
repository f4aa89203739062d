# Start a throwaway single-node Kafka broker on loopback; sourced by scripts/test (or a shell, to run
# `chainloom relay` and `chainloom project` against it by hand).
# Fetches the pinned broker from Maven Central (infra/kafka_broker/pom.xml) on first use,
# installing Java and Maven from Debian's packages when they are absent.
#   start_kafka   → exports CHAINLOOM_KAFKA_BOOTSTRAP (host:port, the variable chainloom itself reads);
#                   stop_kafka stops it and removes its data

_kafka_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

start_kafka() {
  if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    echo "scripts/kafka.sh: installing Java and Maven from Debian's packages" >&2
    _kafka_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    _kafka_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless maven >&2
  fi
  KAFKA_DIR=$(mktemp -d /tmp/chainloom-kafka.XXXXXX)
  local started=$SECONDS
  CHAINLOOM_KAFKA_BOOTSTRAP=$("${PYTHON:-python3}" -m chainloom.infra.kafka_broker start --dir "$KAFKA_DIR")
  export CHAINLOOM_KAFKA_BOOTSTRAP
  echo "Kafka $("${PYTHON:-python3}" -m chainloom.infra.kafka_broker version) on $CHAINLOOM_KAFKA_BOOTSTRAP ($KAFKA_DIR, $((SECONDS - started))s)" >&2
}

stop_kafka() {
  if [ -n "${KAFKA_DIR:-}" ]; then
    "${PYTHON:-python3}" -m chainloom.infra.kafka_broker stop --dir "$KAFKA_DIR" --clean || true
    KAFKA_DIR=
  fi
}
