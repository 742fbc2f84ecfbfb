"""Film projects: drafts, review, terms and the public catalogue."""
