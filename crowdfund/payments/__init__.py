"""Payments: the Stripe gateway (the only code that talks to Stripe) and a
loopback localstripe launcher for development and tests."""
