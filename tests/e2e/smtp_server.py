"""A real SMTP server for the end-to-end tests (aiosmtpd): saves each message as received.

usage: smtp_server.py OUTDIR PORT [--tls CERT KEY | --implicit-tls CERT KEY] [--auth USER PASSWORD]
                      [--reject TEXT]

Each message becomes OUTDIR/N.eml (the DATA exactly as received, CRLF line ends included) and
OUTDIR/N.json (the envelope: mail_from, rcpt_tos, the authenticated user). Prints "ready" once it
accepts connections and runs until killed. With --reject, a message containing TEXT is refused for
good (554) and not saved.
"""
import json
import logging
import os
import ssl
import sys
import threading
import time
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

out, port = sys.argv[1], int(sys.argv[2])
args = sys.argv[3:]
tls = auth = implicit = reject = None
while args:
    if args[0] == "--tls":
        tls, args = (args[1], args[2]), args[3:]
    elif args[0] == "--implicit-tls":
        implicit, args = (args[1], args[2]), args[3:]
    elif args[0] == "--reject":
        reject, args = args[1].encode(), args[2:]
    elif args[0] == "--auth":
        auth, args = (args[1], args[2]), args[3:]
    else:
        sys.exit(f"unknown argument {args[0]}")

warnings.simplefilter("ignore")
logging.getLogger("mail.log").setLevel(logging.ERROR)
lock = threading.Lock()
count = [0]


class Handler:
    async def handle_DATA(self, server, session, envelope):
        if reject is not None and reject in envelope.original_content:
            return "554 5.7.1 Message refused"
        with lock:
            count[0] += 1
            n = count[0]
        base = os.path.join(out, str(n))
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content)
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "user": session.auth_data.login.decode() if session.authenticated else None,
        }
        with open(base + ".json", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == auth[0].encode()
        and auth_data.password == auth[1].encode()
    )
    return AuthResult(success=ok, auth_data=auth_data if ok else None)


kw = {}
if tls:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls[0], tls[1])
    kw.update(tls_context=ctx, require_starttls=True)
if implicit:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(implicit[0], implicit[1])
    kw.update(ssl_context=ctx)
if auth:
    kw.update(authenticator=authenticator, auth_required=True, auth_require_tls=bool(tls))

c = Controller(Handler(), hostname="127.0.0.1", port=port, **kw)
c.start()
print("ready", flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    c.stop()
