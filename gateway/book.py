"""The book: the one Lua script every ledger entry (money/ledger.py) is applied by.

Each quota contributes its operations, functions `op.<name>(keys, args, now)`
that return their answer (a write returns none): the daily budgets
(money/budget_scripts.py), the rate limits (money/quota_scripts.py) and what
replicas share of the models' health and load (fleet_scripts.py). One script
for all of them keeps one command per turn of the event loop: a second script
would cost a second round trip.

The batch is one argument, a JSON array of entries `[op, [keys], [args]]`, the
arguments as strings (as ARGV would hold them): decoded by the store's C JSON
library, it costs the gateway one serialisation where arguments one by one cost
redis-py a packing step each (the ledger's busiest cost in a profile). `now` is
the store's clock, in milliseconds, read once per batch. (No cluster: the keys
of a batch span owners and slots anyway.)
"""

from __future__ import annotations

from gateway import fleet_scripts
from gateway.money import budget_scripts, quota_scripts

_DISPATCH = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local answers = {}
for _, entry in ipairs(cjson.decode(ARGV[1])) do
  for _, value in ipairs(op[entry[1]](entry[2], entry[3], now)) do
    answers[#answers + 1] = value
  end
end
return answers
"""

SCRIPT = ("local op = {}\n" + budget_scripts.COMMON + budget_scripts.OPERATIONS
          + quota_scripts.OPERATIONS + fleet_scripts.OPERATIONS + _DISPATCH)
