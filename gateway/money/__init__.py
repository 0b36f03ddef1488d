"""A request's money: token counts, prices, worst cases, budgets and their ledger."""
