"""E-mail: a transactional outbox (outbox.py: queue_email and the `emails`
table), how a message is built (messages.py), delivered after commit by a
thread or a command (delivery.py) through a mailer's backend (transport.py)."""
