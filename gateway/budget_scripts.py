"""The budget's Lua scripts: each runs inside Redis as one atomic step.

Per key and UTC day the store holds the spend (`gw:spend:v1:{date}`, key name ->
micro-dollars), the reservations of requests in flight (a hash: reservation id
-> micro-dollars, plus `_total`) and their expiries (a sorted set), so a
reservation held by a process that died frees itself.

APPLY takes a batch: the settlements and the reservations that queued in one
turn of the event loop go to the store in one command, so a busy gateway pays
one round trip for many requests.
"""

from __future__ import annotations

# Frees one reservation and says what it held (0: it was gone already).
_RELEASE = """
local function release(held_key, expiry_key, id)
  redis.call('ZREM', expiry_key, id)
  local held = redis.call('HGET', held_key, id)
  if not held then return 0 end
  redis.call('HDEL', held_key, id)
  redis.call('HINCRBY', held_key, '_total', string.format('%d', -tonumber(held)))
  return tonumber(held)
end

local function balance(spend_key, held_key, expiry_key, name, now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', expiry_key, '-inf', now)) do
    release(held_key, expiry_key, id)
  end
  return tonumber(redis.call('HGET', spend_key, name) or '0'),
         tonumber(redis.call('HGET', held_key, '_total') or '0')
end
"""

# KEYS: per settlement, its spend hash, reservations hash, expiries and marker; then per
#   reservation, its spend hash, reservations hash and expiries.
# ARGV: the number of settlements and of reservations, hold_s, reservations_kept_s,
#   spend_kept_s, marker_s; then per settlement: key name, reservation id ('' for none),
#   cost; then per reservation: key name, budget, worst case, minimum, reservation id,
#   the id of a reservation it replaces ('' for none, freed whatever the answer).
# A settlement sent again after its reply was lost finds its marker and does nothing, so
# spend is never counted twice. Returns, per reservation: granted (0: refused), spent,
# reserved (this grant included).
APPLY = _RELEASE + """
local settlements, reservations = tonumber(ARGV[1]), tonumber(ARGV[2])
local hold_s, kept_s, spend_kept_s, marker_s = tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
for i = 0, settlements - 1 do
  local k, a = i * 4, 6 + i * 3
  if redis.call('SET', KEYS[k + 4], '1', 'NX', 'EX', marker_s) then
    if ARGV[a + 2] ~= '' then release(KEYS[k + 2], KEYS[k + 3], ARGV[a + 2]) end
    redis.call('HINCRBY', KEYS[k + 1], ARGV[a + 1], ARGV[a + 3])
    redis.call('EXPIRE', KEYS[k + 1], spend_kept_s)
  end
end
local now = tonumber(redis.call('TIME')[1])
local answers = {}
for i = 0, reservations - 1 do
  local k, a = settlements * 4 + i * 3, 6 + settlements * 3 + i * 6
  local held_key, expiry_key = KEYS[k + 2], KEYS[k + 3]
  local spent, reserved = balance(KEYS[k + 1], held_key, expiry_key, ARGV[a + 1], now)
  if ARGV[a + 6] ~= '' then reserved = reserved - release(held_key, expiry_key, ARGV[a + 6]) end
  local grant = math.min(tonumber(ARGV[a + 3]), tonumber(ARGV[a + 2]) - spent - reserved)
  if grant < tonumber(ARGV[a + 4]) or grant < 0 then
    grant = 0
  else
    local amount = string.format('%d', grant)
    redis.call('HSET', held_key, ARGV[a + 5], amount)
    redis.call('HINCRBY', held_key, '_total', amount)
    redis.call('ZADD', expiry_key, now + hold_s, ARGV[a + 5])
    redis.call('EXPIRE', held_key, kept_s)
    redis.call('EXPIRE', expiry_key, kept_s)
    reserved = reserved + grant
  end
  answers[#answers + 1] = grant
  answers[#answers + 1] = spent
  answers[#answers + 1] = reserved
end
return answers
"""

# KEYS: spend hash, reservations hash, expiries. ARGV: key name. Returns {spent, reserved}.
BALANCE = _RELEASE + """
local spent, reserved = balance(KEYS[1], KEYS[2], KEYS[3], ARGV[1],
                                tonumber(redis.call('TIME')[1]))
return {spent, reserved}
"""
