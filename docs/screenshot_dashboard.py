"""Screenshot a ZenML dashboard page with headless Chromium (Debian's ``chromium`` package) over the DevTools protocol.

    python docs/screenshot_dashboard.py http://127.0.0.1:8237/projects/default/runs/<run id> docs/dashboard_end_to_end.png

Why not ``chromium --screenshot --virtual-time-budget``: the dashboard lays out a run's DAG in a web worker, which
virtual time does not advance, so that shot shows "Calculating DAG Visualization". Here the page gets a real wait,
then the run-insights panel and the "local version" banner are closed and the DAG is fitted to the window.
Needs ``websocket-client`` (``pip install websocket-client``); a documentation tool, not part of the product.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

# Run in the page after the wait, in order (each followed by a short pause): collapse the details panel, close the
# banner, press the DAG's "fit view" control (the second-to-last of the left-hand controls).
PAGE_ACTIONS = (
    "(() => { const h = [...document.querySelectorAll('*')].find(e => e.childElementCount === 0 && e.textContent.trim() === 'Run Insights');"
    " let p = h; for (let i = 0; i < 4 && p; i++) { const b = p.querySelector('button'); if (b) { b.click(); return 'panel closed'; } p = p.parentElement; } return 'no panel'; })()",
    "(() => { const t = [...document.querySelectorAll('*')].find(e => e.childElementCount === 0 && e.textContent.includes('You are running a local version'));"
    " let p = t; for (let i = 0; i < 5 && p; i++) { const bs = p.querySelectorAll('button'); if (bs.length) { bs[bs.length - 1].click(); return 'banner closed'; } p = p.parentElement; } return 'no banner'; })()",
    "(() => { const b = [...document.querySelectorAll('button')].filter(b => { const r = b.getBoundingClientRect(); return r.x < 40 && r.y > 120 && r.y < 400; });"
    " if (b.length >= 3) { b[b.length - 2].click(); return 'fitted'; } return 'no fit control'; })()",
)


def screenshot(url: str, out: str, wait: float = 20.0, width: int = 1600, height: int = 1000, port: int = 9339) -> None:
    import websocket  # websocket-client

    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
        f"--window-size={width},{height}", f"--remote-debugging-port={port}", "--remote-allow-origins=*",
    ]
    with tempfile.TemporaryDirectory(prefix="iat-chromium-") as profile:
        proc = subprocess.Popen(["chromium", *flags, f"--user-data-dir={profile}", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            tabs: list[dict[str, Any]] = []
            for _ in range(60):
                try:
                    tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2))
                    break
                except OSError:
                    time.sleep(0.5)
            ws = websocket.create_connection(next(t["webSocketDebuggerUrl"] for t in tabs if t["type"] == "page"), timeout=60)
            counter = iter(range(1, 1_000_000))

            def call(method: str, **params: Any) -> dict[str, Any]:
                i = next(counter)
                ws.send(json.dumps({"id": i, "method": method, "params": params}))
                while True:
                    msg = json.loads(ws.recv())
                    if msg.get("id") == i:
                        return msg.get("result", {})

            call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
            call("Page.enable")
            call("Page.navigate", url=url)
            time.sleep(wait)
            for js in PAGE_ACTIONS:
                print(call("Runtime.evaluate", expression=js, returnByValue=True).get("result", {}).get("value"))
                time.sleep(3)
            with open(out, "wb") as f:
                f.write(base64.b64decode(call("Page.captureScreenshot", format="png")["data"]))
            print(f"wrote {out}")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--wait", type=float, default=20.0, help="seconds to let the page load and lay out")
    a = p.parse_args()
    screenshot(a.url, a.out, a.wait)
