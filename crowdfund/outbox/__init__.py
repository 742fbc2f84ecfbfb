"""The transactional outbox for work (tasks.py), carried out by workers (running.py)."""
