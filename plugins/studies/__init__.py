"""The study kit any pack can use: ladders of child runs need worker claims, a ledger that carries
finished points across machines, and curve fits with stated verdicts (``moderation_study`` is
built on it; ``bench/`` reads ledgers and fits with it)."""
