"""The orchestration layer: above every domain, below the web layer (crowdfund/site).

What crosses domains lives here, so that dependencies point one way: the
payment flows (the only callers of the Stripe adapter, crowdfund/payments),
the cross-domain reactions (reactions.py: called explicitly, no signals), and
the batch jobs the `flask` commands run (round_close, reconcile, jobs).

Transactions: a workflow that calls Stripe or works in batches owns its
transaction steps and commits them itself (each module's docstring says
how); no transaction is open across a call to Stripe. Everything below this
layer only flushes.
"""
