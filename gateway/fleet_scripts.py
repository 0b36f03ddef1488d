"""What replicas share of the models' health and load: operations in the book (book.py).

- `gw:fleet:v1:cooling`: a hash, model name -> when its cooldown ends (ms of the store's
  clock); `gw:fleet:v1:failures:{model}`: a sorted set of its recent failed calls, by id,
  scored by time. A failure is counted once, whichever replica saw it (its id is its
  member, so a resent write counts nothing twice).
- `gw:fleet:v1:busy`: a hash of each process's requests in flight per model
  (`busy:{process}:{model}` -> count) and its lease (`alive:{process}` -> ms); a process
  that stops syncing drops out when its lease ends.
"""

from __future__ import annotations

COOLING_KEY = "gw:fleet:v1:cooling"
BUSY_KEY = "gw:fleet:v1:busy"


def failures_key(model: str) -> str:
    return f"gw:fleet:v1:failures:{model}"


# fail. KEYS: the model's failures, the cooling hash. ARGV: model, failure id,
#   after_failures, window_ms, for_ms, at once ('1': cool now).
# forget. KEYS: the model's failures, the cooling hash. ARGV: model.
# sync. KEYS: the cooling hash, the busy hash. ARGV: process id, lease_ms, then per model
#   its name and this process's requests in flight on it.
#   Answers, per model: ms left of its cooldown (0: none), other processes' requests in
#   flight on it.
OPERATIONS = """
op.fail = function(k, a, now)
  if tonumber(redis.call('HGET', k[2], a[1]) or '0') > now then return {} end
  redis.call('ZADD', k[1], now, a[2])
  redis.call('ZREMRANGEBYSCORE', k[1], '-inf', now - tonumber(a[4]))
  if a[6] == '1' or redis.call('ZCARD', k[1]) >= tonumber(a[3]) then
    redis.call('HSET', k[2], a[1], now + tonumber(a[5]))
    redis.call('DEL', k[1])
  else
    redis.call('PEXPIRE', k[1], a[4])
  end
  return {}
end

op.forget = function(k, a)
  redis.call('DEL', k[1])
  redis.call('HDEL', k[2], a[1])
  return {}
end

op.sync = function(k, a, now)
  local me, lease = a[1], tonumber(a[2])
  redis.call('HSET', k[2], 'alive:' .. me, now + lease)
  for i = 3, #a, 2 do
    if tonumber(a[i + 1]) > 0 then
      redis.call('HSET', k[2], 'busy:' .. me .. ':' .. a[i], a[i + 1])
    else
      redis.call('HDEL', k[2], 'busy:' .. me .. ':' .. a[i])
    end
  end
  redis.call('PEXPIRE', k[2], lease * 10)
  local fields, alive, busy = redis.call('HGETALL', k[2]), {}, {}
  for i = 1, #fields, 2 do
    local process = string.match(fields[i], '^alive:(.*)$')
    if process then
      if tonumber(fields[i + 1]) > now then alive[process] = true
      else redis.call('HDEL', k[2], fields[i]) end
    end
  end
  for i = 1, #fields, 2 do
    local process, model = string.match(fields[i], '^busy:([^:]*):(.*)$')
    if process then
      if not alive[process] then redis.call('HDEL', k[2], fields[i])
      elseif process ~= me then busy[model] = (busy[model] or 0) + tonumber(fields[i + 1]) end
    end
  end
  local answers = {}
  for i = 3, #a, 2 do
    local left = tonumber(redis.call('HGET', k[1], a[i]) or '0') - now
    if left <= 0 then left = 0 end
    answers[#answers + 1] = left
    answers[#answers + 1] = busy[a[i]] or 0
  end
  return answers
end
"""
