"""`make demo`: migrate a fresh database, seed it, and serve on 127.0.0.1:5000.

Only for development: it uses Flask's own server and the development config.
"""

from __future__ import annotations

import os

from crowdfund import create_app
from crowdfund.demo import seed
from crowdfund.migrate import upgrade

HOST = "127.0.0.1"
PORT = int(os.environ.get("PORT", "5000"))


def main() -> None:
    os.environ.setdefault("CROWDFUND_ENV", "development")
    app = create_app()
    upgrade(app.config["DATABASE_URL"])
    with app.extensions["crowdfund.sessionmaker"]() as session:
        logins = seed(session)
        session.commit()
    print("\nReelshare demo at http://%s:%d" % (HOST, PORT))
    print("Logins (password for all: demo-password-1):")
    for role, email in logins:
        print(f"  {role:8} {email}")
    print(f"Mail is written to {app.config['MAIL_FOLDER']}\n")
    app.run(host=HOST, port=PORT, debug=False, use_reloader=False, threaded=True)


if __name__ == "__main__":
    main()
