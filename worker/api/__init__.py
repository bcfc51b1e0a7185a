"""Speaking with the Xquik API: `client` (the one aiohttp user), `classify` (pure decisions on
its answers), `call` (one call under the retry policy), `directory` (the listings), `session`
(one key and everything that speaks with it), `keys` (every rule about API keys), `urls` (the
network rule for URLs that receive secrets).

Nothing is imported here: `--help` must not pay for aiohttp."""
