#!/usr/bin/python3
"""The web console (GET /, src/console.html) driven in headless Chromium
against user-service with real PostgreSQL and Redis: a user created over
gRPC shows in the page's list; a user created through the page's form, and
an edit made in it, are what gRPC reads back; a refused create shows the
server's message.

Chromium is driven through the DevTools protocol over
--remote-debugging-pipe (NUL-separated JSON on fds 3 and 4), so nothing
beyond Debian's `chromium` package and python's standard library is needed.
Every wait is bounded (WAIT_S); the browser and the servers are stopped at
the end. Exits 77 (CTest: skipped) when chromium is not installed or
cannot start here even with --no-sandbox.

Run by CTest as: /usr/bin/python3 test_user_console.py BUILD_BIN_DIR
"""
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import usvc_env  # noqa: E402

BIN = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin")
SKIP = 77
WAIT_S = 20
ENV = M = STUB = CHANNEL = BROWSER = None


class BrowserUnavailable(Exception):
    pass


class Browser:
    """One headless Chromium and one page, over the DevTools pipe."""

    def __init__(self, exe):
        self.dir = tempfile.mkdtemp(prefix="usvc-chromium-")
        cmd_r, self.cmd_w = os.pipe()   # we write, chromium reads fd 3
        self.ev_r, ev_w = os.pipe()     # chromium writes fd 4, we read

        def fds():
            os.dup2(cmd_r, 3)
            os.dup2(ev_w, 4)
        self.err = open(os.path.join(self.dir, "stderr"), "wb")
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--remote-debugging-pipe",
             "--user-data-dir=" + self.dir, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.err,
            preexec_fn=fds, close_fds=False)
        os.close(cmd_r)
        os.close(ev_w)
        self.buf = b""
        self.next_id = 0
        self.session = None

    def stderr(self):
        with open(os.path.join(self.dir, "stderr"), "rb") as f:
            return f.read().decode(errors="replace")[-2000:]

    def call(self, method, params=None, timeout=WAIT_S):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                m = json.loads(raw)
                if m.get("id") == self.next_id:
                    if "error" in m:
                        raise RuntimeError("%s: %s" % (method, m["error"]))
                    return m.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium: no answer to " + method)
            r, _, _ = select.select([self.ev_r], [], [], left)
            if r:
                chunk = os.read(self.ev_r, 65536)
                if not chunk:
                    raise BrowserUnavailable("chromium exited:\n" + self.stderr())
                self.buf += chunk

    def open(self, url):
        tid = self.call("Target.createTarget", {"url": url})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": tid, "flatten": True})["sessionId"]

    def js(self, expr):
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError("page: %s" % r["exceptionDetails"])
        return r["result"].get("value")

    def wait(self, expr, what):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.05)
        raise AssertionError("timed out waiting for %s; status: %r" % (
            what, self.js("document.querySelector('#status').textContent")))

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001  (it may be gone already)
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.cmd_w)
        os.close(self.ev_r)
        self.err.close()
        shutil.rmtree(self.dir, ignore_errors=True)


ROWS = """JSON.stringify([...document.querySelectorAll('#users tbody tr')].map(
  tr => [tr.dataset.id, tr.querySelector('.name').textContent,
         tr.querySelector('.email').textContent]))"""


def rows():
    return [tuple(r) for r in json.loads(BROWSER.js(ROWS))]


def status():
    return BROWSER.js("document.querySelector('#status').textContent")


def fill_and_submit(form, values):
    """Types values into a form's inputs (as input events) and clicks its
    submit button, the way a user does; the page's own handlers run."""
    for sel, v in values.items():
        BROWSER.js("(() => { const e = document.querySelector(%s); e.value = %s;"
                   " e.dispatchEvent(new Event('input', {bubbles: true})); })()"
                   % (json.dumps(sel), json.dumps(v)))
    BROWSER.js("document.querySelector(%s).requestSubmit()" % json.dumps(form))


def setUpModule():
    global ENV, M, STUB, CHANNEL, BROWSER
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        print("SKIP: chromium is not installed (apt-get install chromium; "
              "scripts/bootstrap installs it)")
        sys.exit(SKIP)
    M = usvc_env.load_messages()
    ENV = usvc_env.Env(BIN)
    try:
        ENV.pg_up()
        ENV.redis_up()
        ENV.svc_up(extra_env={"PERFC_SERVER_TRANSPORT": "h2"})
        CHANNEL = grpc.insecure_channel(ENV.target)
        STUB = usvc_env.Stub(CHANNEL, M)
        BROWSER = Browser(exe)
        try:
            BROWSER.call("Browser.getVersion")
        except (BrowserUnavailable, TimeoutError) as e:
            BROWSER.close()
            BROWSER = None
            print("SKIP: chromium cannot run here even with --no-sandbox: %s" % e)
            tearDownModule()
            sys.exit(SKIP)
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    global ENV
    if BROWSER is not None:
        BROWSER.close()
    if CHANNEL is not None:
        CHANNEL.close()
    if ENV is not None:
        rc = ENV.svc_stop()
        ENV.stop()
        ENV = None
        assert rc in (0, None), "user-service exited with %s after SIGTERM" % rc


class Console(unittest.TestCase):
    def test_page(self):
        # A user created over gRPC before the page opens is in its list.
        g = STUB.CreateUser(M["CreateUserRequest"](name="Grace via gRPC",
                                                   email="grace@example.com"), timeout=10)
        BROWSER.open("http://%s/" % ENV.target)
        BROWSER.wait("!!document.body && document.body.dataset.state === 'ready'",
                     "the list")
        self.assertIn((str(g.id), "Grace via gRPC", "grace@example.com"), rows())
        self.assertEqual(status(), "%d user(s) shown" % len(rows()))

        # A user created with the page's form is what gRPC reads.
        fill_and_submit("#create", {"#create-name": "Ada via page",
                                    "#create-email": "ada@example.com"})
        st = BROWSER.wait("(s => s.startsWith('created user ') && s)"
                          "(document.querySelector('#status').textContent)", "the create")
        uid = int(st.split()[-1])
        self.assertIn((str(uid), "Ada via page", "ada@example.com"), rows())
        u = STUB.GetUser(M["GetUserRequest"](id=uid), timeout=10)
        self.assertEqual((u.name, u.email), ("Ada via page", "ada@example.com"))

        # An edit in the page (it sends only the changed name: the PATCH
        # route's mask comes from the body) is what gRPC reads; the email
        # stays.
        BROWSER.js("document.querySelector('#users tr[data-id=\"%d\"] .edit').click()" % g.id)
        self.assertFalse(BROWSER.js("document.querySelector('#edit').hidden"))
        self.assertEqual(BROWSER.js("document.querySelector('#edit-email').value"),
                         "grace@example.com")
        fill_and_submit("#edit", {"#edit-name": "Grace edited"})
        BROWSER.wait("document.querySelector('#status').textContent === 'saved user %d'"
                     % g.id, "the edit")
        self.assertIn((str(g.id), "Grace edited", "grace@example.com"), rows())
        u = STUB.GetUser(M["GetUserRequest"](id=g.id), timeout=10)
        self.assertEqual((u.name, u.email), ("Grace edited", "grace@example.com"))
        self.assertTrue(BROWSER.js("document.querySelector('#edit').hidden"))

        # A refused create shows the server's google.rpc.Status message.
        n = len(rows())
        fill_and_submit("#create", {"#create-name": "x" * 101,
                                    "#create-email": "long@example.com"})
        st = BROWSER.wait("(s => s.startsWith('cannot create: ') && s)"
                          "(document.querySelector('#status').textContent)", "the refusal")
        self.assertTrue(st.startswith("cannot create: 400: "), st)
        self.assertIn("name", st)
        self.assertEqual(BROWSER.js("document.querySelector('#status').className"), "error")
        self.assertEqual(len(rows()), n)

        # A user created over gRPC after the page opened shows on Reload.
        h = STUB.CreateUser(M["CreateUserRequest"](name="Later", email="later@example.com"),
                            timeout=10)
        BROWSER.js("document.querySelector('#reload').click()")
        BROWSER.wait("!!document.querySelector('#users tr[data-id=\"%d\"]')" % h.id, "Reload")
        self.assertIn((str(h.id), "Later", "later@example.com"), rows())


if __name__ == "__main__":
    unittest.main(verbosity=2)
