"""Flask extensions, created unbound and bound in create_app()."""

from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

login_manager = LoginManager()
login_manager.login_view = "accounts.login"
login_manager.login_message = "Please log in to see that page."
login_manager.login_message_category = "info"
login_manager.session_protection = "strong"

csrf = CSRFProtect()
