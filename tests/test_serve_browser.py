"""The try-it page in headless Chromium against the real server: a person types a text, sees the
prediction and sends a correction, with no script or console error. Chromium is driven over the
DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages on fds 3 / 4), which needs
no extra package. Skipped only when Chromium is not installed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time

import pytest

from reflectlm.report.screenshot import FLAGS, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="Chromium not found (apt-get install chromium)")
pytest.importorskip("uvicorn")

from _server import start, stop  # noqa: E402

SCRIPT = """(async () => {
  const wait = async (f) => { for (let i = 0; i < 200; i++) { if (f()) return true; await new Promise(r => setTimeout(r, 50)); } return false; };
  const st = () => document.getElementById('status').textContent;
  document.getElementById('key').value = 'page-key';
  document.getElementById('text').value = 'great good love';
  document.getElementById('predict').click();
  if (!await wait(() => st().startsWith('prediction'))) return {error: 'no prediction: ' + st()};
  const predicted = document.getElementById('predicted').textContent;
  const sel = document.getElementById('label');
  sel.value = [...sel.options].map(o => o.value).find(v => !predicted.startsWith(v + ' '));
  document.getElementById('send').click();
  if (!await wait(() => st().startsWith('correction stored'))) return {error: 'no correction: ' + st()};
  return {predicted, corrected: sel.value, status: st(), bars: document.querySelectorAll('.bar').length};
})()"""


class DevTools:
    def __init__(self, browser: str):
        self.cmd_r, self.cmd_w = os.pipe()
        self.res_r, self.res_w = os.pipe()
        self.profile = tempfile.mkdtemp(prefix="reflectlm-chromium-")

        def fds():  # the protocol pipe: Chromium reads fd 3, writes fd 4 (dup2 after close_fds would be undone)
            os.dup2(self.cmd_r, 3)
            os.dup2(self.res_w, 4)

        # Its own session: close() kills Chromium's helper processes too, which otherwise keep
        # writing into the profile while it is removed ("Directory not empty", seen once in CI).
        self.proc = subprocess.Popen([browser, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
                                      "about:blank"],
                                     preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(self.cmd_r)
        os.close(self.res_w)
        self.buf, self.next_id, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while time.time() < deadline:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(reply["error"])
                    return reply["result"]
                self.events.append(reply)
            self.buf += os.read(self.res_r, 1 << 16)
        raise TimeoutError(method)

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the browser and every helper it started
        except ProcessLookupError:
            pass
        self.proc.wait()
        os.close(self.cmd_w)
        os.close(self.res_r)
        for _ in range(20):  # a helper may still be exiting: retry briefly, then leave the rest to /tmp
            shutil.rmtree(self.profile, ignore_errors=True)
            if not os.path.exists(self.profile):
                break
            time.sleep(0.1)


def test_the_page_predicts_and_sends_a_correction(tiny_cls_run, tmp_path):
    store = tmp_path / "s.sqlite"
    proc, url = start(tiny_cls_run, store, env={"REFLECTLM_API_KEYS": "page:page-key"})
    tools = DevTools(find_chromium())
    try:
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        tools.send("Runtime.enable", session=session)
        tools.send("Page.enable", session=session)
        tools.send("Page.navigate", {"url": url + "/"}, session=session)
        for _ in range(100):
            ready = tools.send("Runtime.evaluate", {"expression": "document.readyState + ' ' + !!document.getElementById('predict')",
                                                    "returnByValue": True}, session=session)
            if ready["result"].get("value") == "complete true":
                break
            time.sleep(0.1)
        out = tools.send("Runtime.evaluate", {"expression": SCRIPT, "awaitPromise": True, "returnByValue": True},
                         session=session)["result"]["value"]
        problems = [e for e in tools.events if e.get("method") == "Runtime.exceptionThrown" or
                    (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")]
    finally:
        tools.close()
        stop(proc)
    assert "error" not in out, out
    assert not problems, problems
    assert out["bars"] == 3 and out["status"].startswith("correction stored")
    label = out["predicted"].split(" ")[0]
    assert label in ("neg", "neu", "pos") and out["corrected"] != label
    row = sqlite3.connect(store).execute("SELECT f.label, p.text FROM feedback f JOIN predictions p "
                                         "ON p.id = f.prediction_id").fetchone()
    assert row == (out["corrected"], "great good love")
