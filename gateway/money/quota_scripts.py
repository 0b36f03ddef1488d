"""The rate limits' operations in the book (book.py): Lua functions, each applied atomically.

Per owner (a key, or a model: a provider account) the store holds, under
`gw:limit:v1:{owner}:`:
- `requests`: a sorted set of the requests admitted in the last minute, by id,
  scored by their admission time (ms): requests per minute are counted exactly,
  over any sixty seconds;
- `tokens`: a hash of the tokens used (input and output, settled with the real
  usage), in ten-second slots: the last six slots are the minute's tokens;
- `flight`: a sorted set of the requests in flight, scored by when their lease
  ends (a process that died holding one frees it when the lease ends).

An admission checks every limit the owner has and takes a place under each only
if all of them have room, in one step, so concurrent requests on any number of
replicas cannot all pass. Writes are idempotent: a request's id is its member,
and usage leaves a marker.
"""

from __future__ import annotations

WINDOW_MS = 60_000
SLOT_MS = 10_000  # tokens are counted in slots this long; the window holds six
USED_PREFIX = "gw:used:v1:"  # + a request's id: the marker its usage leaves

# admit. KEYS: the owner's requests, tokens, flight. ARGV: request id, rpm, tpm,
#   max in flight ('' for no limit), lease_ms.
#   Answers admitted (1/0), refused by (0 none, 1 requests, 2 tokens, 3 in flight),
#   retry after (ms), requests left, requests reset (ms), tokens left, tokens reset (ms)
#   (-1 for a limit the owner has not).
# release. KEYS: the owner's requests, flight. ARGV: request id. Its admission is forgotten
#   (never used) and its place in flight freed.
# ended. KEYS: the flights to leave (the key's, when it has max_in_flight), then the tokens
#   hashes to count in (the key's and the model's that have a tpm). ARGV: the admission's
#   id in the flight, the number of flights, tokens, the request's id (its marker).
OPERATIONS = f"""
local window_ms, slot_ms, used_prefix = {WINDOW_MS}, {SLOT_MS}, '{USED_PREFIX}'
local slots = window_ms / slot_ms

local function tokens_used(key, now)
  local current, sum, oldest = math.floor(now / slot_ms), 0, nil
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local slot = tonumber(fields[i])
    if slot <= current - slots then
      redis.call('HDEL', key, fields[i])
    else
      sum = sum + tonumber(fields[i + 1])
      if oldest == nil or slot < oldest then oldest = slot end
    end
  end
  return sum, oldest
end

op.admit = function(k, a, now)
  local id, rpm, tpm, flight = a[1], tonumber(a[2]), tonumber(a[3]), tonumber(a[4])
  local again = (rpm and redis.call('ZSCORE', k[1], id)) or
                (flight and redis.call('ZSCORE', k[3], id))
  local refused, retry = 0, 0
  local requests_left, requests_reset, tokens_left, tokens_reset = -1, -1, -1, -1
  if rpm then
    redis.call('ZREMRANGEBYSCORE', k[1], '-inf', now - window_ms)
    local count = redis.call('ZCARD', k[1])
    local oldest = redis.call('ZRANGE', k[1], 0, 0, 'WITHSCORES')[2]
    requests_reset = oldest and (tonumber(oldest) + window_ms - now) or 0
    requests_left = rpm - count
    if not again and count >= rpm then refused, retry = 1, requests_reset end
  end
  if tpm then
    local used, oldest = tokens_used(k[2], now)
    tokens_left = math.max(0, tpm - used)
    tokens_reset = oldest and ((oldest + slots) * slot_ms - now) or 0
    if not again and refused == 0 and used >= tpm then refused, retry = 2, tokens_reset end
  end
  if flight then
    redis.call('ZREMRANGEBYSCORE', k[3], '-inf', now)
    if not again and refused == 0 and redis.call('ZCARD', k[3]) >= flight then
      refused, retry = 3, 1000
    end
  end
  if refused == 0 and not again then
    if rpm then
      redis.call('ZADD', k[1], now, id)
      redis.call('PEXPIRE', k[1], window_ms + 1000)
      requests_left = requests_left - 1
      if requests_reset == 0 then requests_reset = window_ms end
    end
    if flight then
      redis.call('ZADD', k[3], now + tonumber(a[5]), id)
      redis.call('PEXPIRE', k[3], tonumber(a[5]) + 1000)
    end
  end
  return {{refused == 0 and 1 or 0, refused, retry, requests_left, requests_reset,
          tokens_left, tokens_reset}}
end

op.release = function(k, a)
  redis.call('ZREM', k[2], a[1])
  redis.call('ZREM', k[1], a[1])
  return {{}}
end

op.ended = function(k, a, now)
  local flights, tokens = tonumber(a[2]), tonumber(a[3])
  for i = 1, flights do redis.call('ZREM', k[i], a[1]) end
  if #k > flights and tokens > 0 and
      redis.call('SET', used_prefix .. a[4], '1', 'NX', 'PX', window_ms * 2) then
    local slot = tostring(math.floor(now / slot_ms))
    for i = flights + 1, #k do
      redis.call('HINCRBY', k[i], slot, tokens)
      redis.call('PEXPIRE', k[i], window_ms + slot_ms)
    end
  end
  return {{}}
end
"""
