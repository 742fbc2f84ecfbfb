"""Stake holds, orders, cancellation and round close."""
