"""The budget's operations in the book (book.py): Lua functions, each applied atomically.

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

A settlement that takes a key's spend to one of its alert thresholds (a share
of its budget) queues one alert on `gw:alerts:v1` (alerts.py sends it), once
per key, threshold and day: the first to set the threshold's marker queues it.
"""

from __future__ import annotations

SETTLED_PREFIX = "gw:settled:v1:"  # + a reservation's id: the marker its settlement leaves
ALERTS_KEY = "gw:alerts:v1"  # the alerts to send: a list of JSON objects
ALERTED_PREFIX = "gw:alerted:v1:"  # + day:percent:key name: the marker of an alert queued
ALERTED_KEPT_S = 2 * 86400

# Helpers of both the book and the BALANCE read.
COMMON = f"""
local settled_prefix = '{SETTLED_PREFIX}'

local function release(held_key, expiry_key, id)
  redis.call('ZREM', expiry_key, id)
  local held = redis.call('HGET', held_key, id)
  if not held then return 0, 0 end
  local used = tonumber(redis.call('HGET', held_key, 'u:' .. id) or '0')
  redis.call('HDEL', held_key, id, 'u:' .. id)
  redis.call('HINCRBY', held_key, '_total', string.format('%d', -tonumber(held)))
  return tonumber(held), used
end

local function balance(spend_key, held_key, expiry_key, name, now, marker_s)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', expiry_key, '-inf', now)) do
    local held, used = release(held_key, expiry_key, id)
    if used > 0 then
      redis.call('HINCRBY', spend_key, name, string.format('%d', math.min(held, used)))
    end
    redis.call('SET', settled_prefix .. id, '1', 'EX', marker_s)  -- a late settlement: once
  end
  return tonumber(redis.call('HGET', spend_key, name) or '0'),
         tonumber(redis.call('HGET', held_key, '_total') or '0')
end
"""

# settle. KEYS: the key's spend hash, reservations hash, expiries. ARGV: key name,
#   reservation id ('' for none), cost, marker id (the reservation id, or a settlement id
#   of its own), spend_kept_s, marker_s, budget ('' for none), UTC day, then the alert
#   thresholds in percent of the budget.
# grow. KEYS: the same three. ARGV: key name, budget, held now (0 for a new reservation),
#   target, least worth adding, reservation id, id of a reservation it replaces ('' for
#   none: freed whatever the answer), tally used so far ('' to leave it), patient ('1': when
#   other requests' holds make the grant smaller than it would be without them, grant
#   nothing, and say so), hold_s, kept_s, marker_s.
#   Answers held (0: refused or gone), spent, reserved (this grant included), blocked (1:
#   other requests' holds made the grant smaller).
OPERATIONS = f"""
local alerts_key, alerted_prefix = '{ALERTS_KEY}', '{ALERTED_PREFIX}'

op.settle = function(k, a)
  if not redis.call('SET', settled_prefix .. a[4], '1', 'NX', 'EX', a[6]) then return {{}} end
  if a[2] ~= '' then release(k[2], k[3], a[2]) end
  local spent = redis.call('HINCRBY', k[1], a[1], a[3])
  redis.call('EXPIRE', k[1], a[5])
  if a[7] == '' or tonumber(a[3]) <= 0 then return {{}} end
  local budget = tonumber(a[7])
  for i = 9, #a do
    local percent = tonumber(a[i])
    if spent * 100 >= budget * percent and redis.call(
        'SET', alerted_prefix .. a[8] .. ':' .. a[i] .. ':' .. a[1], '1', 'NX', 'EX',
        {ALERTED_KEPT_S}) then
      redis.call('RPUSH', alerts_key, cjson.encode({{key = a[1], spent_microusd = spent,
        budget_microusd = budget, threshold_percent = percent, date = a[8]}}))
    end
  end
  return {{}}
end

op.grow = function(k, a, now_ms)
  local now = math.floor(now_ms / 1000)  -- reservations expire by the second
  local held_key, expiry_key = k[2], k[3]
  local id, replaces, used = a[6], a[7], a[8]
  local spent, reserved = balance(k[1], held_key, expiry_key, a[1], now, a[12])
  if replaces ~= '' then
    reserved = reserved - release(held_key, expiry_key, replaces)
    redis.call('SET', settled_prefix .. replaces, '1', 'EX', a[12])
  end
  local held = tonumber(redis.call('HGET', held_key, id) or '0')
  local from = tonumber(a[3])
  local blocked = 0
  if held == from and redis.call('EXISTS', settled_prefix .. id) == 0 then
    local budget, want = tonumber(a[2]), tonumber(a[4]) - held
    local add = math.min(want, budget - spent - reserved)
    if math.min(want, budget - spent - held) > add then blocked = 1 end
    if blocked == 1 and a[9] == '1' then add = 0 end
    if add >= tonumber(a[5]) and add > 0 then
      held = held + add
      redis.call('HSET', held_key, id, string.format('%d', held))
      redis.call('HINCRBY', held_key, '_total', string.format('%d', add))
      if from == 0 then redis.call('ZADD', expiry_key, now + tonumber(a[10]), id) end
      redis.call('EXPIRE', held_key, a[11])
      redis.call('EXPIRE', expiry_key, a[11])
      reserved = reserved + add
    end
  end
  if held > 0 and used ~= '' then redis.call('HSET', held_key, 'u:' .. id, used) end
  return {{held, spent, reserved, blocked}}
end
"""

# KEYS: spend hash, reservations hash, expiries. ARGV: key name, marker_s.
# Returns {spent, reserved}.
BALANCE = COMMON + """
local spent, reserved = balance(KEYS[1], KEYS[2], KEYS[3], ARGV[1],
                                tonumber(redis.call('TIME')[1]), ARGV[2])
return {spent, reserved}
"""
