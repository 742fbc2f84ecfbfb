"""Payments: the Stripe gateway, the only code that talks to Stripe (an adapter
that only funding's workflows call)."""
