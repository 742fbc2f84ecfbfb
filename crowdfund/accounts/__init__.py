"""Users, roles and studio organisations."""
