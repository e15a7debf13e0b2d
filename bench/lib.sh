# Shared by the bench scripts, which set DB and PREFIX and then source this
# file from the repository's root.

RESULTS=bench/results
mkdir -p "$RESULTS"

# Processes the script starts; cleanup stops them and removes its Redis keys:
# those under the prefix and those whose hash tag starts with it (the send
# queue's, `{PREFIX:send:0}:...`, which a run leaves one per message when it
# stops before the workers' housekeeping prunes them).
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for pattern in "$PREFIX:*" "{$PREFIX:*"; do
    redis-cli -h 127.0.0.1 --scan --pattern "$pattern" | xargs -r -n 500 redis-cli -h 127.0.0.1 DEL >/dev/null || true
  done
}
trap cleanup EXIT

fresh_database() { psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" postgres; }
sql() { psql -h 127.0.0.1 -U postgres -tA -F ' ' -c "$1" "$DB"; }
wait_port() {
  for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done
  echo "port $1 did not open" >&2
  exit 1
}
