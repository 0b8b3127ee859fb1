//! The Lua scripts of the Redis usage store (see the parent module for the keys). Each
//! touches the keys of one tenant only, all under the tenant's hash tag.

/// Applies one tenant's records of a batch unless already applied for the sender.
///
/// - `KEYS[1]`: the mark `usage:{t}:seq:<sender>`; `KEYS[2]`: `usage:{t}:dirty`; then per
///   record `i` (from 1): `KEYS[2i+1]` its live hash, `KEYS[2i+2]` its day's users HLL.
/// - `ARGV[1]`: `seq`, 20 digits (compared as two exact 10-digit halves); `ARGV[2]`: the
///   mark's time to live (ms); `ARGV[3]`: the users HLL's (ms); `ARGV[4]`: the number of
///   records; then per record the 18 counters in [`COUNTER_FIELDS`](crate::usage::COUNTER_FIELDS) order, the plan (`""`:
///   none), the number of users and the users.
///
/// Returns `1` (applied and marked) or `0` (a duplicate: nothing changed but the mark's TTL).
/// Counters are bounded by the filter's validation so `HINCRBY` cannot overflow midway.
pub const INGEST_SCRIPT: &str = r"
local last = redis.call('GET', KEYS[1])
if last then
  local lh, h = tonumber(string.sub(last, 1, 10)), tonumber(string.sub(ARGV[1], 1, 10))
  if lh > h or (lh == h and tonumber(string.sub(last, 11)) >= tonumber(string.sub(ARGV[1], 11))) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 0
  end
end
local fields = {'requests', 'bytes_in', 'bytes_out', 'errors_4xx', 'errors_5xx',
  'latency_ms_sum', 'lat_0', 'lat_1', 'lat_2', 'lat_3', 'lat_4', 'lat_5', 'lat_6', 'lat_7',
  'lat_8', 'lat_9', 'lat_10', 'lat_11'}
local a = 5
for i = 1, tonumber(ARGV[4]) do
  local hash, users = KEYS[2 * i + 1], KEYS[2 * i + 2]
  redis.call('HINCRBY', hash, 'requests', 0)
  for f = 1, 18 do
    if ARGV[a] ~= '0' then
      redis.call('HINCRBY', hash, fields[f], ARGV[a])
    end
    a = a + 1
  end
  if ARGV[a] ~= '' then
    redis.call('HSET', hash, 'plan', ARGV[a])
  end
  local n = tonumber(ARGV[a + 1])
  a = a + 2
  if n > 0 then
    redis.call('PFADD', users, unpack(ARGV, a, a + n - 1))
    redis.call('PEXPIRE', users, ARGV[3])
    redis.call('SADD', KEYS[2], users)
    a = a + n
  end
  redis.call('SADD', KEYS[2], hash)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Stages a tenant's dirty aggregates under a flush id.
///
/// - `KEYS[1]`: `usage:{t}:dirty`; `KEYS[2]`: `usage:{t}:staging`; `KEYS[3]`:
///   `usage:{t}:flush:<id>`; `KEYS[4]`: `usage:{t}:flush:<id>:users`.
/// - `ARGV[1]`: the tenant's key base `usage:{t}:`; `ARGV[2]`: the flush id.
///
/// Renames each dirty live hash to `usage:{t}:flush:<id>:<date>:<endpoint>`, stores each dirty
/// day's `PFCOUNT` in `KEYS[4]`, empties the dirty set, appends the id to the list `KEYS[2]`
/// if anything was staged, and returns every id in `KEYS[2]`, oldest first. The staged names are built inside the
/// script from the tenant's base, so they share the tenant's hash tag and slot.
pub const STAGE_SCRIPT: &str = r"
local base, id = ARGV[1], ARGV[2]
local staged = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local rest = string.sub(key, #base + 1)
  if string.sub(rest, 1, 6) == 'users:' then
    redis.call('HSET', KEYS[4], string.sub(rest, 7), redis.call('PFCOUNT', key))
    redis.call('SADD', KEYS[3], KEYS[4])
    staged = staged + 1
  elseif redis.call('EXISTS', key) == 1 then
    local target = base .. 'flush:' .. id .. ':' .. rest
    redis.call('RENAME', key, target)
    redis.call('SADD', KEYS[3], target)
    staged = staged + 1
  end
end
redis.call('DEL', KEYS[1])
if staged > 0 then
  redis.call('RPUSH', KEYS[2], id)
end
return redis.call('LRANGE', KEYS[2], 0, -1)
";

/// Reads one staged flush id: `KEYS[1]` is `usage:{t}:flush:<id>`. Returns, per staged key,
/// its name and its `HGETALL`.
pub const SNAPSHOT_SCRIPT: &str = r"
local out = {}
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  table.insert(out, key)
  table.insert(out, redis.call('HGETALL', key))
end
return out
";

/// Deletes one staged flush id: `KEYS[1]` is `usage:{t}:flush:<id>`, `KEYS[2]`
/// `usage:{t}:staging`, `ARGV[1]` the id.
pub const RELEASE_SCRIPT: &str = r"
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('DEL', key)
end
redis.call('DEL', KEYS[1])
redis.call('LREM', KEYS[2], 0, ARGV[1])
return 1
";
