"""A local SMTP server for the e-mail channel's test: STARTTLS required,
then AUTH (user / p4ss-smtp) required; each message is written to OUT as
N.eml, with N.meta saying who logged in and whether TLS was on.

    smtp_server.py PORT CERT KEY OUT    # prints "ready", stops when stdin closes
"""
import os
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, cert, key, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]


class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith(".eml")])
        with open(os.path.join(out, f"{n}.meta"), "w") as f:
            f.write(f"user={session.auth_data!r} authenticated={session.authenticated} tls={session.ssl is not None} to={envelope.rcpt_tos}\n")
        with open(os.path.join(out, f"{n}.eml.tmp"), "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(os.path.join(out, f"{n}.eml.tmp"), os.path.join(out, f"{n}.eml"))
        return "250 OK"


def authenticate(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == b"user" and data.password == b"p4ss-smtp"
    return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
controller = Controller(
    Handler(),
    hostname="127.0.0.1",
    port=port,
    tls_context=context,
    require_starttls=True,
    authenticator=authenticate,
    auth_required=True,
    auth_require_tls=True,
)
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
