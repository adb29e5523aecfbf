#!/usr/bin/env python3
"""A small web app that behaves like a Django admin at the HTTP level, for http.smoke tests.

basic auth in front of everything; GET /admin/login/ sets a `csrftoken` cookie and renders a
form with a hidden `csrfmiddlewaretoken`; POST checks the token against the cookie and a
same-origin Referer, answers 302 + `sessionid` on success and 200 (form again) on failure;
/admin/pages/add/ creates a page (302, or 200 with errors); /admin/images/multiple/add/
takes a multipart upload and answers JSON; /media/original_images/existing.png exists.
Start-up is flaky on purpose: --refuse-for seconds with no listener, then --unavailable-for
seconds of 503 answers. With --database-url-env VAR, the home page reads the default site's
hostname from the PostgreSQL database whose URL is in $VAR (as a restored Wagtail site would),
and answers 503 while that database cannot be read.

usage: webapp.py PORT [--user U --password P] [--admin-password P] [--refuse-for S]
                      [--unavailable-for S] [--database-url-env VAR]
"""
import argparse
import base64
import email.parser
import email.policy
import html
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def pg_env(url):
    """libpq environment for a postgresql:// URL (the password never goes to argv)."""
    u = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qs(u.query)
    env = dict(os.environ)
    env["PGHOST"] = q.get("host", [u.hostname or "localhost"])[0]
    env["PGPORT"] = q.get("port", [str(u.port or 5432)])[0]
    env["PGUSER"] = urllib.parse.unquote(u.username or "postgres")
    env["PGPASSWORD"] = urllib.parse.unquote(u.password or "")
    env["PGDATABASE"] = u.path.lstrip("/")
    return env


def site_hostname(url):
    out = subprocess.run(
        ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c",
         "SELECT hostname FROM wagtailcore_site WHERE is_default_site"],
        env=pg_env(url), capture_output=True, text=True, timeout=10,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return out.stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--user", default="dr")
    ap.add_argument("--password", default="basic-pw")
    ap.add_argument("--admin-user", default="admin")
    ap.add_argument("--admin-password", default="admin-pw")
    ap.add_argument("--refuse-for", type=float, default=0)
    ap.add_argument("--unavailable-for", type=float, default=0)
    ap.add_argument("--database-url-env")
    args = ap.parse_args()

    state = {"sessions": set(), "pages": [], "images": [], "ready_at": 0.0}
    expected_auth = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def send(self, status, body=b"", ctype="text/html; charset=utf-8", headers=()):
            if isinstance(body, str):
                body = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def cookies(self):
            out = {}
            for part in self.headers.get("Cookie", "").split(";"):
                if "=" in part:
                    k, v = part.strip().split("=", 1)
                    out[k] = v
            return out

        def gate(self):
            if time.time() < state["ready_at"]:
                self.send(503, "starting up")
                return False
            if self.headers.get("Authorization") != expected_auth:
                self.send(401, "auth required", headers=[("WWW-Authenticate", 'Basic realm="dr"')])
                return False
            return True

        def logged_in(self):
            return self.cookies().get("sessionid") in state["sessions"]

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n)

        def csrf_ok(self, token):
            cookie = self.cookies().get("csrftoken")
            host = self.headers.get("Host", "")
            referer = self.headers.get("Referer", "")
            same_origin = urllib.parse.urlsplit(referer).netloc == host
            return bool(cookie) and token == cookie and same_origin

        def form(self):
            return {k: v[0] for k, v in urllib.parse.parse_qs(self.body().decode()).items()}

        def login_page(self, error=""):
            token = self.cookies().get("csrftoken") or secrets.token_hex(16)
            page = (
                "<html><body><h1>Log in</h1>"
                + (f'<p class="errornote">{html.escape(error)}</p>' if error else "")
                + '<form method="post"><input type="hidden" name="csrfmiddlewaretoken" value="' + token + '">'
                + '<input name="username"><input name="password" type="password"></form></body></html>'
            )
            self.send(200, page, headers=[("Set-Cookie", f"csrftoken={token}; Path=/")])

        def do_GET(self):
            if not self.gate():
                return
            path = urllib.parse.urlsplit(self.path).path
            if path == "/" and args.database_url_env:
                try:
                    host = site_hostname(os.environ[args.database_url_env])
                except Exception as e:  # the database is missing or not restored yet
                    self.send(503, "database unavailable: " + html.escape(str(e)))
                    return
                self.send(200, f"<html><body><h1>Welcome to Acme</h1><p id=site>{html.escape(host)}</p></body></html>")
            elif path == "/":
                self.send(200, "<html><body><h1>Welcome to Acme</h1></body></html>")
            elif path == "/admin/login/":
                self.login_page()
            elif path == "/admin/":
                if not self.logged_in():
                    self.send(302, headers=[("Location", "/admin/login/?next=/admin/")])
                else:
                    self.send(200, "<html><body><h1>Site administration</h1></body></html>")
            elif path == "/admin/pages/add/":
                if not self.logged_in():
                    self.send(302, headers=[("Location", "/admin/login/")])
                else:
                    token = self.cookies().get("csrftoken", "")
                    self.send(200, f'<form><input type="hidden" name="csrfmiddlewaretoken" value="{token}"><input name="title"></form>')
            elif path == "/media/original_images/existing.png":
                self.send(200, PNG_MAGIC + b"existing", ctype="image/png")
            elif path == "/api/pages/":
                self.send(200, json.dumps({"meta": {"total_count": len(state["pages"])}, "items": state["pages"]}), ctype="application/json")
            else:
                self.send(404, "not found")

        def do_POST(self):
            if not self.gate():
                return
            path = urllib.parse.urlsplit(self.path).path
            ctype = self.headers.get("Content-Type", "")
            if path == "/admin/login/":
                f = self.form()
                if not self.csrf_ok(f.get("csrfmiddlewaretoken")):
                    self.send(403, "<h1>Forbidden (403)</h1><p>CSRF verification failed. Request aborted.</p>")
                elif f.get("username") == args.admin_user and f.get("password") == args.admin_password:
                    sid = secrets.token_hex(16)
                    state["sessions"].add(sid)
                    self.send(302, headers=[("Location", "/admin/"), ("Set-Cookie", f"sessionid={sid}; Path=/; HttpOnly")])
                else:
                    self.login_page("Please enter a correct username and password.")
            elif path == "/admin/pages/add/":
                f = self.form()
                if not self.logged_in():
                    self.send(302, headers=[("Location", "/admin/login/")])
                elif not self.csrf_ok(f.get("csrfmiddlewaretoken")):
                    self.send(403, "CSRF verification failed.")
                elif not f.get("title"):
                    self.send(200, '<ul class="errorlist"><li>This field is required.</li></ul>')
                else:
                    state["pages"].append({"id": len(state["pages"]) + 1, "title": f["title"]})
                    self.send(302, headers=[("Location", f"/admin/pages/{len(state['pages'])}/")])
            elif path == "/admin/images/multiple/add/" and ctype.startswith("multipart/form-data"):
                raw = self.body()
                msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw
                )
                fields, files = {}, []
                for part in msg.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    if part.get_filename():
                        files.append((name, part.get_filename(), part.get_payload(decode=True)))
                    else:
                        fields[name] = part.get_payload(decode=True).decode()
                if not self.logged_in():
                    self.send(302, headers=[("Location", "/admin/login/")])
                elif not self.csrf_ok(fields.get("csrfmiddlewaretoken")):
                    self.send(403, "CSRF verification failed.")
                elif not files or not files[0][2].startswith(PNG_MAGIC):
                    self.send(200, json.dumps({"success": False, "error_message": "Not a valid image."}), ctype="application/json")
                else:
                    state["images"].append(files[0][1])
                    self.send(200, json.dumps({"success": True, "image_id": len(state["images"])}), ctype="application/json")
            else:
                self.send(404, "not found")

    time.sleep(args.refuse_for)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    state["ready_at"] = time.time() + args.unavailable_for
    print("listening", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
