"""Screening-ticket rewards: tiers, screenings, tickets, booking and check-in."""
