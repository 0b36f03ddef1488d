"""The book: the one Lua script every ledger entry (money/ledger.py) is applied by.

Each quota contributes its operations, functions `op.<name>(keys, args, now)`
that return their answer (a write returns none): the daily budgets
(money/budget_scripts.py), the rate limits (money/quota_scripts.py) and what
replicas share of the models' health and load (fleet_scripts.py). One script
for all of them keeps one command per turn of the event loop: a second script
would cost a second round trip.

ARGV holds, per entry, its op, its number of keys and of arguments, then its
arguments; KEYS holds every entry's keys in order. `now` is the store's clock,
in milliseconds, read once per batch.
"""

from __future__ import annotations

from gateway import fleet_scripts
from gateway.money import budget_scripts, quota_scripts

_DISPATCH = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local answers, at_key, at = {}, 1, 1
while at <= #ARGV do
  local name, nkeys, nargs = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local k, a = {}, {}
  for i = 1, nkeys do k[i] = KEYS[at_key + i - 1] end
  for i = 1, nargs do a[i] = ARGV[at + 2 + i] end
  for _, value in ipairs(op[name](k, a, now)) do answers[#answers + 1] = value end
  at_key, at = at_key + nkeys, at + 3 + nargs
end
return answers
"""

SCRIPT = ("local op = {}\n" + budget_scripts.COMMON + budget_scripts.OPERATIONS
          + quota_scripts.OPERATIONS + fleet_scripts.OPERATIONS + _DISPATCH)
