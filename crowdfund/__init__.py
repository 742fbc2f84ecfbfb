"""Reelshare: fans co-invest in films. The app is built by `crowdfund.app.create_app()`.

Importing this package (or `crowdfund.money`, `crowdfund.ledger`, a domain's
services) loads no Flask and no Stripe: see docs/architecture.md for the layers.
"""
