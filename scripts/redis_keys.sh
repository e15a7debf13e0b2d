# Sourced by the scripts that run the stack against the local Redis under a
# prefix of their own.

# Removes a run's keys: those under the prefix and those whose hash tag
# starts with it (the send queue's, `{PREFIX:send:0}:...`, one per message
# left when a run stops before a worker's housekeeping prunes them).
drop_redis_keys() {
  local pattern
  for pattern in "$1:*" "{$1:*"; do
    redis-cli -h 127.0.0.1 --scan --pattern "$pattern" | xargs -r -n 500 redis-cli -h 127.0.0.1 DEL >/dev/null || true
  done
}
