# Drives headless Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: the
# browser reads commands on fd 3 and writes answers on fd 4, each a NUL-terminated JSON
# message), so a test needs no WebSocket client. Usage:
#   python3 cdp.py CHROMIUM URL STEPS_JSON
# STEPS_JSON is a list of steps, run in order on the page at URL:
#   {"wait": EXPR, "timeout": S, "explain": EXPR}  poll EXPR until it is truthy
#   {"eval": EXPR}                                  evaluate EXPR, keep its value
#   {"screenshot": PATH}                            save a PNG of the window (1400x1000)
# Prints one JSON line: {"ok": true, "results": [...]} or {"ok": false, "step": i, "error": ...,
# "explain": value}. Every wait is bounded; the browser is killed at the end.
import base64
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self, chromium, profile):
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        # Moved above 3 and 4 first, so that placing one cannot overwrite the other.
        to_browser_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        from_browser_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)

        def wire():
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        args = [
            chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking",
            "--disable-component-update", "--remote-debugging-pipe",
            "--user-data-dir=" + profile, "--window-size=1400,1000", "about:blank",
        ]
        self.proc = subprocess.Popen(args, preexec_fn=wire, pass_fds=(3, 4),
                                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=open(os.environ.get("CDP_LOG", os.devnull), "w"))
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)
        self.next_id = 0
        self.buf = b""
        self.session = None

    def call(self, method, params=None, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self.next_id:
                    if "error" in answer:
                        raise RuntimeError(method + ": " + json.dumps(answer["error"]))
                    return answer.get("result", {})
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("browser closed the pipe (exit %s)" % self.proc.poll())
            self.buf += chunk
        raise RuntimeError(method + ": no answer in %d s" % timeout)

    def evaluate(self, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True})
        if "exceptionDetails" in r:
            raise RuntimeError("script error: " + json.dumps(r["exceptionDetails"])[:500])
        return r.get("result", {}).get("value")

    def close(self):
        # The wrapper script, the browser and its helpers share the session started above.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


def main():
    chromium, url, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    with tempfile.TemporaryDirectory(prefix="cdp-", ignore_cleanup_errors=True) as profile:
        b = Browser(chromium, profile)
        results = []
        try:
            target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            b.session = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            b.call("Emulation.setDeviceMetricsOverride",
                   {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
            b.call("Page.enable")
            b.call("Page.navigate", {"url": url})
            for i, step in enumerate(steps):
                if "wait" in step:
                    deadline = time.monotonic() + step.get("timeout", 30)
                    value, error = None, None
                    while time.monotonic() < deadline:
                        try:  # the page may not have loaded yet
                            value, error = b.evaluate(step["wait"]), None
                        except RuntimeError as e:
                            value, error = None, str(e)
                        if value:
                            break
                        time.sleep(0.25)
                    if not value:
                        explain = b.evaluate(step["explain"]) if "explain" in step else error
                        print(json.dumps({"ok": False, "step": i, "error": "timed out waiting for "
                                          + step["wait"], "explain": explain, "results": results}))
                        return 1
                    results.append(value)
                elif "eval" in step:
                    results.append(b.evaluate(step["eval"]))
                elif "screenshot" in step:
                    png = b.call("Page.captureScreenshot", {"format": "png"})
                    with open(step["screenshot"], "wb") as f:
                        f.write(base64.b64decode(png["data"]))
                    results.append(step["screenshot"])
            print(json.dumps({"ok": True, "results": results}))
            return 0
        except Exception as e:  # reported to the test, which fails with it
            print(json.dumps({"ok": False, "error": str(e), "results": results}))
            return 1
        finally:
            b.close()


sys.exit(main())
