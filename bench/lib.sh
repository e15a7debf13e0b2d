# Shared by the bench scripts, which set DB and PREFIX and then source this
# file from the repository's root.

RESULTS=bench/results
mkdir -p "$RESULTS"

# Processes the script starts; cleanup stops them and removes its Redis keys.
source scripts/redis_keys.sh
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  drop_redis_keys "$PREFIX"
}
trap cleanup EXIT

fresh_database() { psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" postgres; }
sql() { psql -h 127.0.0.1 -U postgres -tA -F ' ' -c "$1" "$DB"; }
wait_port() {
  for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done
  echo "port $1 did not open" >&2
  exit 1
}
