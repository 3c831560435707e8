#!/usr/bin/env python3
"""Starts the test provider: a fresh SQLite database (migrated, with a user and two
applications), then Django's development server on 127.0.0.1:PORT.

    PORT=8000 WORKDIR=/tmp/x python3 serve.py
    PORT=0 WORKDIR=/tmp/x python3 serve.py   # a port the system picks; runserver prints it
                                             # ("Starting development server at http://…:<port>/")

Users: alice / alice-password (alice@example.com). Applications (confidential):
  app-client / app-secret   client_credentials
  web-client / web-secret   authorization_code (+ PKCE), RS256 ID tokens, redirect http://127.0.0.1:9/cb
  basic-client / basic-client-upstream-secret   the same, redirecting to GATEWAY_CALLBACK (the
                            gateway logs users in here for its CIBA client basic-client)
"""
import os
import sys
from pathlib import Path

work = Path(os.environ["WORKDIR"])
work.mkdir(parents=True, exist_ok=True)
key_file = work / "rsa.pem"
if not key_file.exists():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
os.environ["DB_PATH"] = str(work / "db.sqlite3")
os.environ["RSA_KEY_FILE"] = str(key_file)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "idp.settings")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from oauth2_provider.models import get_application_model  # noqa: E402

call_command("migrate", verbosity=0)
User = get_user_model()
if not User.objects.filter(username="alice").exists():
    User.objects.create_user("alice", "alice@example.com", "alice-password")
    Application = get_application_model()
    Application.objects.create(
        name="app",
        client_id="app-client",
        client_secret="app-secret",
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    )
    Application.objects.create(
        name="web",
        client_id="web-client",
        client_secret="web-secret",
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris="http://127.0.0.1:9/cb",
        algorithm=Application.RS256_ALGORITHM,
    )
    if os.environ.get("GATEWAY_CALLBACK"):
        Application.objects.create(
            name="basic",
            client_id="basic-client",
            client_secret="basic-client-upstream-secret",
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
            redirect_uris=os.environ["GATEWAY_CALLBACK"],
            algorithm=Application.RS256_ALGORITHM,
        )
call_command("runserver", f"127.0.0.1:{os.environ['PORT']}", use_reloader=False, skip_checks=True)
