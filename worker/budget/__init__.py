"""The rate budget: what a request waits for before it is sent. `base` (the Budget protocol and
what budgets share), `rate` (a rate and its text), `local` (the held-slot budget of one process,
with the learned limit), `state` (its state file, shared by every run on a machine), `shared`
(the same budget in Redis, shared by every worker), `make` (the budget of one tier of one key).

Nothing is imported here: `--help` must not pay for a budget."""
