"""Forms of the web layer (Flask-WTF): they parse input; the services decide."""
