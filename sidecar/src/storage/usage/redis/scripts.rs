//! The Lua scripts of the Redis usage store (see the parent module for the keys). Each
//! touches the keys of one tenant only, all under the tenant's hash tag.

/// [`INGEST_SCRIPT`] with `$apply`, the Lua adding one hash's counters (`hash`, `plan`,
/// `fields`, its pairs from `ARGV[a]` on; it leaves `a` after them).
macro_rules! ingest_script {
    ($apply:literal) => {
        concat!(
            r"
local m = tonumber(ARGV[1])
local stale = {}
for i = 1, m do
  local last, seq = redis.call('GET', KEYS[1 + i]), ARGV[4 + i]
  if last then
    local lh, h = tonumber(string.sub(last, 1, 10)), tonumber(string.sub(seq, 1, 10))
    if lh > h or (lh == h and tonumber(string.sub(last, 11)) >= tonumber(string.sub(seq, 11))) then
      redis.call('PEXPIRE', KEYS[1 + i], ARGV[2])
      stale[#stale + 1] = i
    end
  end
end
if #stale > 0 then
  return stale
end
local hashes = tonumber(ARGV[4])
local a = 5 + m
local dirty = {}
for k = 1, hashes do
  local hash = KEYS[1 + m + k]
  local plan, fields = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
",
            $apply,
            r"  dirty[#dirty + 1] = hash
end
local hlls = tonumber(ARGV[a])
a = a + 1
for u = 1, hlls do
  local key, n = KEYS[1 + m + hashes + u], tonumber(ARGV[a])
  a = a + 1
  for s = a, a + n - 1, 1000 do
    redis.call('PFADD', key, unpack(ARGV, s, math.min(s + 999, a + n - 1)))
  end
  redis.call('PEXPIRE', key, ARGV[3])
  dirty[#dirty + 1] = key
  a = a + n
end
for s = 1, #dirty, 1000 do
  redis.call('SADD', KEYS[1], unpack(dirty, s, math.min(s + 999, #dirty)))
end
for i = 1, m do
  redis.call('SET', KEYS[1 + i], ARGV[4 + i], 'PX', ARGV[2])
end
return {}
"
        )
    };
}

/// Applies one tenant's part of a group of batches (see `ingest.rs`) unless a batch of the
/// group was already applied for its sender.
///
/// - `KEYS[1]`: `usage:{t}:dirty`; `KEYS[2..m+1]`: the marks `usage:{t}:seq:<sender>` of the
///   group's `m` batches (distinct senders); then the `h` live hashes; then the `u` users HLLs.
/// - `ARGV[1..4]`: `m`, the marks' time to live (ms), the users HLLs' (ms), `h`; `ARGV[5..m+4]`:
///   each batch's `seq`, 20 digits (compared as two exact 10-digit halves); then per hash its
///   plan (`""`: none), the number of its non-zero counters and `field, value` pairs; then `u`
///   and per HLL the number of its users and the users.
///
/// If any mark is already `≥` its batch's `seq`, nothing is written but those marks' TTLs, and
/// the answer is their positions (1-based, among the `m`): the caller drops those batches and
/// calls again with the others merged anew. Otherwise every delta is added, every mark set,
/// and the answer is empty. Counters are bounded by the filter's validation (and a group by
/// its record count) so `HINCRBY` cannot overflow midway.
pub const INGEST_SCRIPT: &str = ingest_script!(
    r"
  if fields == 0 then
    redis.call('HINCRBY', hash, 'requests', 0)
  end
  for f = 1, fields do
    redis.call('HINCRBY', hash, ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  if plan ~= '' then
    redis.call('HSET', hash, 'plan', plan)
  end
"
);

/// [`INGEST_SCRIPT`] for the usage log's replay (same keys, arguments and answer): an
/// aggregate that does not exist yet — every one after Redis lost its data — is written with
/// one `HSET` of its fields instead of one `HINCRBY` each (the same result on a missing hash),
/// which is most of Redis's work in a replay. Live ingestion keeps [`INGEST_SCRIPT`]: its
/// aggregates mostly exist, and the `EXISTS` would only add to them.
pub const REPLAY_SCRIPT: &str = ingest_script!(
    r"
  if redis.call('EXISTS', hash) == 0 then
    local set = {}
    for f = 1, fields do
      set[#set + 1] = ARGV[a]
      set[#set + 1] = ARGV[a + 1]
      a = a + 2
    end
    if plan ~= '' then
      set[#set + 1] = 'plan'
      set[#set + 1] = plan
    end
    if #set == 0 then
      set = {'requests', 0}
    end
    redis.call('HSET', hash, unpack(set))
  else
    for f = 1, fields do
      redis.call('HINCRBY', hash, ARGV[a], ARGV[a + 1])
      a = a + 2
    end
    if plan ~= '' then
      redis.call('HSET', hash, 'plan', plan)
    end
  end
"
);

/// Stages a tenant's dirty aggregates under a flush id.
///
/// - `KEYS[1]`: `usage:{t}:dirty`; `KEYS[2]`: `usage:{t}:staging`; `KEYS[3]`:
///   `usage:{t}:flush:<id>`; `KEYS[4]`: `usage:{t}:flush:<id>:users`.
/// - `ARGV[1]`: the tenant's key base `usage:{t}:`; `ARGV[2]`: the flush id.
///
/// Renames each dirty live hash to `usage:{t}:flush:<id>:<date>:<endpoint>`, stores each dirty
/// day's `PFCOUNT` in `KEYS[4]`, empties the dirty set, appends the id to the list `KEYS[2]`
/// and bumps the tenant's stage generation `usage:{t}:stages` if anything was staged (what
/// [`UNFLUSHED_SCRIPT`]'s readers compare), and returns every id in `KEYS[2]`, oldest first. The staged names are built inside the
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
  redis.call('INCR', base .. 'stages')
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

/// Reads everything of one tenant not flushed yet, in one atomic step.
///
/// - `KEYS[1]`: `usage:{t}:dirty`; `KEYS[2]`: `usage:{t}:staging`; `KEYS[3]`:
///   `usage:{t}:stages`. `ARGV[1]`: the tenant's key base `usage:{t}:`.
///
/// Returns `{generation, live, staged...}`: the stage generation (0 when never staged);
/// `live`, per live hash (the dirty set's hashes that exist; the users HLLs are skipped) its
/// name and its `HGETALL`; then per staged id, oldest first, the id and, per staged key, its
/// name and `HGETALL` (as [`SNAPSHOT_SCRIPT`]).
pub const UNFLUSHED_SCRIPT: &str = r"
local base = ARGV[1]
local live = {}
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local rest = string.sub(key, #base + 1)
  if string.sub(rest, 1, 6) ~= 'users:' and redis.call('EXISTS', key) == 1 then
    table.insert(live, key)
    table.insert(live, redis.call('HGETALL', key))
  end
end
local out = {tonumber(redis.call('GET', KEYS[3]) or '0'), live}
for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local staged = {}
  for _, key in ipairs(redis.call('SMEMBERS', base .. 'flush:' .. id)) do
    table.insert(staged, key)
    table.insert(staged, redis.call('HGETALL', key))
  end
  table.insert(out, id)
  table.insert(out, staged)
end
return out
";
