"""Browser smoke test: a chapter notebook in JupyterLab, in a real (headless) Chromium, Run All.

    .venv/bin/python tools/browser_smoke.py        # chapter 1; screenshot in build/browser_smoke.png
    .venv/bin/python tools/browser_smoke.py --notebook notebooks/02_attention_vit_clip.ipynb --out build/ch02.png

What it checks, the way a learner would see it:

1. the notebook opens in JupyterLab 4 and is **not marked modified** before anything runs (a
   notebook that opens "dirty" means the builder writes metadata JupyterLab rewrites on load);
2. *Run All* finishes with no error and **nothing printed to stderr** by any cell;
3. every ipywidgets widget **renders** (no "Error displaying widget", no "Loading widget..." left),
   and chapter 1's patch-size slider is on screen and **responds**: one arrow-key step moves it and
   the kernel redraws the widget's figure;
4. a screenshot of the notebook scrolled to the first widget (the patch-size explorer in chapter 1),
   so a person can look at it.

It exits 0 when all of that holds, 1 otherwise (2 when it cannot start). It needs the project's
environment (JupyterLab from ``.venv``: ``pip install -e ".[lab,test]"``) and a Chromium or Chrome
from the system's packages (``apt-get install chromium`` on Debian/Ubuntu; it never downloads a
browser). It is a local check, not part of ``make test`` or CI: it takes a minute or two.

How: JupyterLab runs on a free local port with a random token, serving a temporary copy of the
notebook (so nothing in the repository is modified, autosave included), with
``expose_app_in_browser`` so the script can drive it through ``window.jupyterapp``. Chromium runs
headless with the DevTools protocol on another free port; the script talks to it over a websocket
(``websocket-client``, which ``jupyter_server`` already depends on).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class _Done(Exception):
    """Stop early (``--open-only``) and still clean up."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    """Call ``predicate`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as err:  # noqa: BLE001 - not up yet; keep the last reason for the message
            last_error = err
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


class DevTools:
    """A minimal Chrome DevTools protocol client: send a command, wait for its reply."""

    def __init__(self, ws_url: str):
        import websocket  # websocket-client, a dependency of jupyter_server

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method} failed: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str, await_promise: bool = False):
        """Evaluate ``expression`` in the page and return its value (JSON-serialisable values only)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=await_promise)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"JavaScript error: {text}")
        return result.get("result", {}).get("value")

    def close(self) -> None:
        self.ws.close()


# JupyterLab settings for the run: no windowing (every cell stays in the page, so widgets can be
# found), no news or update checks (offline), no autosave.
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}

# The notebook panel: the main-area widget holding a .ipynb (headless, nothing has focus, so
# ``shell.currentWidget`` stays empty).
PANEL_JS = """(window.jupyterapp ? Array.from(window.jupyterapp.shell.widgets('main'))
  .find(x => x.context && x.context.path.endsWith('.ipynb') && x.content) : null)"""

STATE_JS = """(() => {
  const w = """ + PANEL_JS + """;
  if (!w || !w.context || !w.context.isReady || !w.content || !w.content.model) return null;
  const kernel = w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  const cells = w.content.model.cells;
  let code = 0, done = 0;
  const stderr = [], errors = [];
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    code++;
    if (c.executionCount !== null && c.executionCount !== undefined) done++;
    for (const o of c.outputs.toJSON()) {
      if (o.output_type === 'stream' && o.name === 'stderr') stderr.push([i, String(o.text).slice(0, 300)]);
      if (o.output_type === 'error') errors.push([i, o.ename + ': ' + String(o.evalue).slice(0, 300)]);
    }
  }
  return {path: w.context.path, dirty: w.context.model.dirty, kernel: kernel ? kernel.status : null,
          code, done, stderr, errors};
})()"""

WIDGETS_JS = """(() => {
  const text = document.body.innerText;
  const views = document.querySelectorAll('.jp-Notebook .jupyter-widgets');
  const sliders = document.querySelectorAll('.jp-Notebook .widget-slider, .jp-Notebook .jupyter-widgets.widget-hslider');
  const slider = sliders[0];
  const label = slider ? slider.innerText : '';
  const outputImages = document.querySelectorAll('.jp-Notebook .widget-output img, .jp-Notebook .jupyter-widgets-output-area img');
  return {views: views.length, sliders: sliders.length, sliderLabel: label,
          sliderVisible: !!(slider && slider.getBoundingClientRect().height > 0),
          widgetImages: outputImages.length,
          errorText: text.includes('Error displaying widget') || text.includes('is not registered'),
          loading: text.includes('Loading widget...')};
})()"""


DIAGNOSE_JS = """(() => {
  const app = window.jupyterapp;
  const w = """ + PANEL_JS + """;
  return {url: location.href, title: document.title, app: typeof app, widget: w ? w.constructor.name : null,
          ready: !!(w && w.context && w.context.isReady),
          kernel: w && w.sessionContext ? String(w.sessionContext.session && w.sessionContext.session.kernel && w.sessionContext.session.kernel.status) : null,
          dialog: (document.querySelector('.jp-Dialog') || {}).innerText || null,
          body: document.body.innerText.slice(0, 300)};
})()"""


SLIDER_JS = """(() => {
  const slider = document.querySelector('.jp-Notebook .widget-slider');
  const box = slider && slider.closest('.jp-OutputArea-output');
  const img = box && box.querySelector('img');
  return {readout: slider ? slider.innerText : null, image: img ? img.src.slice(-200) : null};
})()"""


def json_differences(a, b, path: str = "") -> list[str]:
    """Where two JSON values differ, as 'path: a -> b' lines (what JupyterLab changed on load)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key not in b:
                out.append(f"{path}/{key}: removed")
            elif key not in a:
                out.append(f"{path}/{key}: added {json.dumps(b[key])[:80]}")
            else:
                out += json_differences(a[key], b[key], f"{path}/{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in json_differences(x, y, f"{path}/{i}")]
    if isinstance(a, str) and isinstance(b, list):
        b = "".join(b)
    if isinstance(b, str) and isinstance(a, list):
        a = "".join(a)
    return [] if a == b else [f"{path}: {json.dumps(a)[:80]} -> {json.dumps(b)[:80]}"]


def find_browser(explicit: str | None) -> str:
    if explicit:
        return explicit
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError(
        "no Chromium or Chrome found: install your system's package (Debian/Ubuntu: apt-get install chromium) "
        "or pass --chromium /path/to/chrome"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebook", default="notebooks/01_tokens_and_patches.ipynb", help="notebook to run, relative to the repository")
    parser.add_argument("--out", default=str(ROOT / "build" / "browser_smoke.png"), help="where to write the screenshot")
    parser.add_argument("--chromium", default=None, help="the browser executable (default: the first of %s on PATH)" % ", ".join(BROWSERS))
    parser.add_argument("--timeout", type=float, default=600, help="seconds for Run All to finish")
    parser.add_argument("--no-widget", action="store_true", help="do not require a slider (for notebooks without one)")
    parser.add_argument("--open-only", action="store_true", help="only check that the notebook opens unmodified (no Run All)")
    args = parser.parse_args(argv)

    notebook = (ROOT / args.notebook).resolve()
    if not notebook.exists():
        print(f"no such notebook: {notebook}", file=sys.stderr)
        return 2
    try:
        browser = find_browser(args.chromium)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="mmllm-browser-smoke-"))
    procs: list[subprocess.Popen] = []
    problems: list[str] = []
    cdp: DevTools | None = None
    logs = contextlib.ExitStack()
    try:
        # A temporary copy: running and any save happen there, never in the repository.
        served = tmp / "root" / notebook.parent.name
        served.mkdir(parents=True)
        shutil.copy2(notebook, served / notebook.name)
        settings = tmp / "settings"
        for rel, value in SETTINGS.items():
            path = settings / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))

        port, token = free_port(), base64.b32encode(os.urandom(15)).decode().lower()
        env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        env.pop("MPLBACKEND", None)  # the notebook's own inline backend, as a learner gets
        lab_cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                   f"--ServerApp.token={token}", f"--ServerApp.root_dir={tmp / 'root'}", "--LabApp.expose_app_in_browser=True",
                   "--ServerApp.port_retries=0"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lab_cmd.append("--allow-root")
        lab_log = logs.enter_context(open(tmp / "jupyterlab.log", "w"))
        procs.append(subprocess.Popen(lab_cmd, env=env, stdout=lab_log, stderr=subprocess.STDOUT, cwd=tmp / "root"))
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5).status == 200, 120, "JupyterLab to start")
        print(f"JupyterLab up on {base}")

        profile = tmp / "chromium-profile"
        browser_cmd = [browser, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                       "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
                       "--window-size=1400,1000", "--hide-scrollbars", "about:blank"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            browser_cmd.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        browser_log = logs.enter_context(open(tmp / "chromium.log", "w"))
        procs.append(subprocess.Popen(browser_cmd, stdout=browser_log, stderr=subprocess.STDOUT))
        devtools_port = wait_for(lambda: (profile / "DevToolsActivePort").read_text().split()[0], 60, "Chromium to start")
        targets = wait_for(lambda: json.load(urllib.request.urlopen(f"http://127.0.0.1:{devtools_port}/json/list", timeout=5)), 30, "a page")
        page = next(t for t in targets if t.get("type") == "page")
        cdp = DevTools(page["webSocketDebuggerUrl"])
        cdp.call("Page.enable")
        cdp.call("Runtime.enable")
        cdp.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
        url = f"{base}/lab/tree/{notebook.parent.name}/{notebook.name}?token={token}&reset"
        cdp.call("Page.navigate", url=url)
        print(f"opened {notebook.parent.name}/{notebook.name} in {Path(browser).name}")

        state = wait_for(lambda: (s := cdp.js(STATE_JS)) and s["kernel"] == "idle" and s, 180, "the notebook and its kernel")
        time.sleep(3)  # let JupyterLab apply the kernel's metadata (kernelspec, language_info) before judging "modified"
        state = cdp.js(STATE_JS)
        if state["dirty"]:
            in_lab = json.loads(cdp.js(f"JSON.stringify(({PANEL_JS}).context.model.toJSON())"))
            on_disk = json.loads(notebook.read_text())
            # "trusted" is the model's own transient flag, stripped again on save: not a difference.
            changes = [d for d in json_differences(on_disk, in_lab) if not d.endswith("/metadata/trusted: added false")]
            problems.append("the notebook is marked modified right after opening, before anything ran; "
                            "what JupyterLab holds differs from the file in: " + ("; ".join(changes[:8]) or "nothing visible in its JSON"))
        print(f"kernel idle; {state['code']} code cells; modified on open: {state['dirty']}")

        if args.open_only:
            raise _Done
        t0 = time.monotonic()
        # Run > Run All Cells, on our notebook (activated first: headless, nothing has focus).
        cdp.js(f"(() => {{ const w = {PANEL_JS}; window.jupyterapp.shell.activateById(w.id);"
               " window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; })()")
        state = wait_for(
            # Done when every code cell has run, or when one raised (Run All stops there).
            lambda: (s := cdp.js(STATE_JS)) and (s["done"] == s["code"] or s["errors"]) and s["kernel"] == "idle" and s,
            args.timeout, "Run All to finish", interval=1.0,
        )
        print(f"Run All finished in {time.monotonic() - t0:.0f} s")
        for i, text in state["stderr"]:
            problems.append(f"cell {i} printed to stderr: {text!r}")
        for i, text in state["errors"]:
            problems.append(f"cell {i} raised {text}")

        time.sleep(2)  # widgets render asynchronously after their comm messages arrive
        widgets = cdp.js(WIDGETS_JS)
        print(f"widgets: {widgets}")
        if widgets["errorText"]:
            problems.append("a widget failed to render ('Error displaying widget' or 'not registered' in the page)")
        if widgets["loading"]:
            problems.append("a widget is still 'Loading widget...'")
        if not args.no_widget and not (widgets["sliders"] and widgets["sliderVisible"]):
            problems.append("no rendered slider widget found in the notebook")

        if widgets["sliders"]:
            # Does it respond? Move the first slider one step with the keyboard, as a learner could,
            # and wait for the kernel to redraw the widget's figure.
            before = cdp.js(SLIDER_JS)
            cdp.js("(() => { const h = document.querySelector('.jp-Notebook .widget-slider .noUi-handle, "
                   ".jp-Notebook .widget-slider .ui-slider-handle'); if (h) { h.scrollIntoView({block: 'center'}); h.focus(); }"
                   " return !!h; })()")
            for kind in ("rawKeyDown", "keyUp"):
                cdp.call("Input.dispatchKeyEvent", type=kind, key="ArrowRight", code="ArrowRight", windowsVirtualKeyCode=39)
            try:
                after = wait_for(lambda: (a := cdp.js(SLIDER_JS)) and a["readout"] != before["readout"] and a["image"] != before["image"] and a,
                                 60, "the widget to redraw after moving the slider")
                print(f"slider moved: {before['readout']!r} -> {after['readout']!r}, figure redrawn")
            except TimeoutError as err:
                problems.append(f"the slider did not respond: {err} (readout {before['readout']!r})")

        # Scroll the first slider (else the first widget) to the middle of the view and take the screenshot.
        cdp.js("(() => { const el = document.querySelector('.jp-Notebook .widget-slider') || document.querySelector('.jp-Notebook .jupyter-widgets');"
               " if (el) el.scrollIntoView({block: 'center'}); return !!el; })()")
        time.sleep(1)
        shot = cdp.call("Page.captureScreenshot", format="png")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
        print(f"screenshot: {out.resolve()}")
        cdp.close()
    except _Done:
        pass
    except (TimeoutError, RuntimeError, OSError, StopIteration) as err:
        problems.append(f"{type(err).__name__}: {err}")
        if cdp is not None:
            try:
                print("page state:", cdp.js(DIAGNOSE_JS))
            except Exception as diag_err:  # noqa: BLE001 - diagnostics only
                print("page state: unavailable", diag_err)
        for log in ("jupyterlab.log", "chromium.log"):
            path = tmp / log
            if path.exists():
                print(f"--- last lines of {log} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
    finally:
        for proc in reversed(procs):  # only the processes this script started
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()
        shutil.rmtree(tmp, ignore_errors=True)

    if problems:
        print("FAILED:\n- " + "\n- ".join(problems))
        return 1
    print("OK: opened unmodified, ran with no stderr output, widgets rendered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
