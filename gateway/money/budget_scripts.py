"""The budget's Lua scripts: each runs inside Redis as one atomic step.

Per key and UTC day the store holds the spend (`gw:spend:v1:{date}`, key name ->
micro-dollars), the reservations of requests in flight (a hash: reservation id
-> micro-dollars held, `u:<id>` -> what that request has used so far by the
gateway's running tally, and `_total`) and their expiries (a sorted set). A
reservation whose process died expires: what it held is freed and its tally is
charged, so a crash mid-stream loses only what was made since the last tally.

Every write is idempotent, so a command sent twice (redis-py resends one whose
reply timed out, and settlements queued in an outage are resent) changes
nothing the second time:
- a settlement leaves a marker (`gw:settled:v1:<reservation id>`) and is skipped
  when it finds one; an expired reservation leaves the same marker;
- a reservation is a compare-and-set: "grow reservation <id> from <held> towards
  <target>"; if the store holds anything else for it, it was applied already
  (or is gone), and the answer is what the store holds.

APPLY takes a batch: the settlements and the reservations that queued in one
turn of the event loop go to the store in one command, so a busy gateway pays
one round trip for many requests.
"""

from __future__ import annotations

# ARGV[1..6] of every script: settlements, grows, hold_s, kept_s, spend_kept_s, marker_s;
# ARGV[7]: the marker prefix.
_COMMON = """
local marker_s, marker_prefix = ARGV[6], ARGV[7]

local function release(held_key, expiry_key, id)
  redis.call('ZREM', expiry_key, id)
  local held = redis.call('HGET', held_key, id)
  if not held then return 0, 0 end
  local used = tonumber(redis.call('HGET', held_key, 'u:' .. id) or '0')
  redis.call('HDEL', held_key, id, 'u:' .. id)
  redis.call('HINCRBY', held_key, '_total', string.format('%d', -tonumber(held)))
  return tonumber(held), used
end

local function balance(spend_key, held_key, expiry_key, name, now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', expiry_key, '-inf', now)) do
    local held, used = release(held_key, expiry_key, id)
    if used > 0 then
      redis.call('HINCRBY', spend_key, name, string.format('%d', math.min(held, used)))
    end
    redis.call('SET', marker_prefix .. id, '1', 'EX', marker_s)  -- a late settlement: once
  end
  return tonumber(redis.call('HGET', spend_key, name) or '0'),
         tonumber(redis.call('HGET', held_key, '_total') or '0')
end
"""

# KEYS: per settlement, its spend hash, reservations hash and expiries; then the same per grow.
# ARGV after the common seven: per settlement: key name, reservation id ('' for none), cost,
#   marker id (the reservation id, or a settlement id of its own); per grow: key name,
#   budget, held now (0 for a new reservation), target, least worth adding, reservation id,
#   id of a reservation it replaces ('' for none: freed whatever the answer), tally used
#   so far ('' to leave it), patient ('1': when other requests' holds make the grant
#   smaller than it would be without them, grant nothing, and say so).
# Returns, per grow: held (0: refused or gone), spent, reserved (this grant included),
#   blocked (1: other requests' holds made the grant smaller).
APPLY = _COMMON + """
local settlements, grows = tonumber(ARGV[1]), tonumber(ARGV[2])
local hold_s, kept_s, spend_kept_s = tonumber(ARGV[3]), ARGV[4], ARGV[5]
for i = 0, settlements - 1 do
  local k, a = i * 3, 7 + i * 4
  if redis.call('SET', marker_prefix .. ARGV[a + 4], '1', 'NX', 'EX', marker_s) then
    if ARGV[a + 2] ~= '' then release(KEYS[k + 2], KEYS[k + 3], ARGV[a + 2]) end
    redis.call('HINCRBY', KEYS[k + 1], ARGV[a + 1], ARGV[a + 3])
    redis.call('EXPIRE', KEYS[k + 1], spend_kept_s)
  end
end
local now = tonumber(redis.call('TIME')[1])
local answers = {}
for i = 0, grows - 1 do
  local k, a = settlements * 3 + i * 3, 7 + settlements * 4 + i * 9
  local held_key, expiry_key = KEYS[k + 2], KEYS[k + 3]
  local id, replaces, used = ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  local spent, reserved = balance(KEYS[k + 1], held_key, expiry_key, ARGV[a + 1], now)
  if replaces ~= '' then
    reserved = reserved - release(held_key, expiry_key, replaces)
    redis.call('SET', marker_prefix .. replaces, '1', 'EX', marker_s)
  end
  local held = tonumber(redis.call('HGET', held_key, id) or '0')
  local from = tonumber(ARGV[a + 3])
  local blocked = 0
  if held == from and redis.call('EXISTS', marker_prefix .. id) == 0 then
    local budget, want = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 4]) - held
    local add = math.min(want, budget - spent - reserved)
    if math.min(want, budget - spent - held) > add then blocked = 1 end
    if blocked == 1 and ARGV[a + 9] == '1' then add = 0 end
    if add >= tonumber(ARGV[a + 5]) and add > 0 then
      held = held + add
      redis.call('HSET', held_key, id, string.format('%d', held))
      redis.call('HINCRBY', held_key, '_total', string.format('%d', add))
      if from == 0 then redis.call('ZADD', expiry_key, now + hold_s, id) end
      redis.call('EXPIRE', held_key, kept_s)
      redis.call('EXPIRE', expiry_key, kept_s)
      reserved = reserved + add
    end
  end
  if held > 0 and used ~= '' then redis.call('HSET', held_key, 'u:' .. id, used) end
  answers[#answers + 1] = held
  answers[#answers + 1] = spent
  answers[#answers + 1] = reserved
  answers[#answers + 1] = blocked
end
return answers
"""

# KEYS: spend hash, reservations hash, expiries. ARGV: the common seven, then key name.
# Returns {spent, reserved}.
BALANCE = _COMMON + """
local spent, reserved = balance(KEYS[1], KEYS[2], KEYS[3], ARGV[8],
                                tonumber(redis.call('TIME')[1]))
return {spent, reserved}
"""
