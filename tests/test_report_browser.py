"""Open a generated report in headless Chromium and check it renders: no console errors, every <img>
decoded (naturalWidth > 0), every <audio> has a finite duration > 0 once its metadata is loaded; write a
screenshot to reports/browser-check.png.

Chromium is driven over the DevTools protocol with a minimal stdlib websocket client (no extra Python
dependency). The test is skipped when no Chromium binary is installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "reports" / "browser-check.png"
TIMEOUT_S = 25.0


def find_chromium() -> str | None:
    env = os.environ.get("PARITY_CHROMIUM")
    if env and Path(env).exists():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


# ---------------------------------------------------------------------------------------------
# a minimal websocket client (RFC 6455: client frames masked, text frames, fragmentation, ping)

class WebSocket:
    def __init__(self, url: str, timeout: float = TIMEOUT_S):
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", url)
        if not m:
            raise ValueError(f"unsupported websocket url {url!r}")
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"websocket handshake failed: {status!r}")
        self.buf = head.split(b"\r\n\r\n", 1)[1]

    def _recv_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        head = bytes([0x81])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask
                          + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self) -> str:
        parts: list[bytes] = []
        while True:
            b0, b1 = self._recv_exact(2)
            fin, opcode = b0 & 0x80, b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            mask = self._recv_exact(4) if b1 & 0x80 else None
            data = self._recv_exact(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x9:  # ping
                self._send_frame(0xA, data)
                continue
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if opcode in (0x0, 0x1, 0x2):
                parts.append(data)
                if fin:
                    return b"".join(parts).decode()

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class CDP:
    """DevTools protocol over one page target: send commands, collect events."""

    def __init__(self, ws_url: str):
        self.ws = WebSocket(ws_url)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = TIMEOUT_S, **params) -> dict:
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(method)

    def wait_event(self, method: str, timeout: float = TIMEOUT_S) -> dict:
        for e in self.events:
            if e["method"] == method:
                return e
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return msg
        raise TimeoutError(method)


class Chromium:
    def __init__(self, binary: str):
        self.tmp = tempfile.mkdtemp(prefix="parity-chromium-")
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--disable-extensions", "--mute-audio",
             "--window-size=1280,1600", f"--user-data-dir={self.tmp}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port = self._port()

    def _port(self) -> int:
        end = time.monotonic() + TIMEOUT_S
        port_file = Path(self.tmp) / "DevToolsActivePort"
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: {self.proc.stderr.read()[-2000:]}")
            if port_file.exists():
                first = port_file.read_text().split("\n")[0].strip()
                if first.isdigit():
                    return int(first)
            time.sleep(0.05)
        raise TimeoutError("chromium did not open its DevTools port")

    def page_ws(self) -> str:
        end = time.monotonic() + TIMEOUT_S
        while time.monotonic() < end:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as r:
                targets = json.loads(r.read())
            pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise TimeoutError("no page target")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


CHECK_JS = """
(async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = r; i.onerror = r; })));
  const audios = Array.from(document.querySelectorAll('audio'));
  const durations = await Promise.all(audios.map(a => new Promise(resolve => {
    if (a.readyState >= 1) { resolve(a.duration); return; }
    const t = setTimeout(() => resolve(-1), 10000);
    a.addEventListener('loadedmetadata', () => { clearTimeout(t); resolve(a.duration); }, {once: true});
    a.addEventListener('error', () => { clearTimeout(t); resolve(-2); }, {once: true});
    a.preload = 'metadata';
    a.load();
  })));
  return JSON.stringify({
    title: document.title,
    images: imgs.map(i => ({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight, complete: i.complete})),
    audio: durations.map(d => (Number.isFinite(d) ? d : String(d))),
    sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
  });
})()
"""


def check_page(html: Path, screenshot: Path | None = SCREENSHOT, binary: str | None = None) -> dict:
    """Load ``html`` via file:// and return {console_errors, images, audio, sections, title}."""
    binary = binary or find_chromium()
    if binary is None:
        raise FileNotFoundError("chromium not found")
    browser = Chromium(binary)
    cdp = None
    try:
        cdp = CDP(browser.page_ws())
        cdp.call("Runtime.enable")
        cdp.call("Log.enable")
        cdp.call("Page.enable")
        cdp.call("Emulation.setDeviceMetricsOverride", width=1280, height=1600, deviceScaleFactor=1, mobile=False)
        cdp.events.clear()
        cdp.call("Page.navigate", url=html.resolve().as_uri())
        cdp.wait_event("Page.loadEventFired")
        res = cdp.call("Runtime.evaluate", expression=CHECK_JS, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"check script failed: {res['exceptionDetails']}")
        out = json.loads(res["result"]["value"])
        errors = []
        for e in cdp.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif e["method"] == "Runtime.exceptionThrown":
                errors.append(str(p.get("exceptionDetails", {}).get("text")) + " "
                              + str(p.get("exceptionDetails", {}).get("exception", {}).get("description", "")))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                errors.append(f"{p['entry'].get('source')}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        out["console_errors"] = errors
        if screenshot is not None:
            shot = cdp.call("Page.captureScreenshot", format="png")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            out["screenshot"] = str(screenshot)
        return out
    finally:
        if cdp is not None:
            cdp.ws.close()
        browser.close()


@pytest.fixture(scope="module")
def chromium() -> str:
    b = find_chromium()
    if b is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium); browser check skipped")
    return b


def _synthetic_traces(d: Path) -> tuple[Path, Path]:
    """A reference and a candidate trace in the canonical layout (3 ODE steps, flow_mel, f0, 1 s of audio);
    the candidate drifts a little and its audio holds a NaN burst (the sanitised-audio path). No model run:
    the browser check stays fast."""
    import torch

    from parity.trace import write_trace

    g = torch.Generator().manual_seed(1)
    T, N = 50, 50 * 480
    ref, cand = {}, {}
    x = torch.randn(1, 80, T, generator=g)
    ref["x0"] = cand["x0"] = x.clone()
    for k in (1, 2, 3):
        t = torch.tensor([0.1 * (k - 1)])
        v1, v2 = torch.randn(1, 80, T, generator=g), torch.randn(1, 80, T, generator=g)
        vc = 1.7 * v1 - 0.7 * v2
        xr = x + 0.1 * vc
        for side, eps in ((ref, 0.0), (cand, 1e-4 * k)):
            side[f"step{k}.t"], side[f"step{k}.dt"] = t.clone(), torch.tensor([0.1])
            side[f"step{k}.v1"], side[f"step{k}.v2"] = v1 + eps, v2.clone()
            side[f"step{k}.v_cfg"], side[f"step{k}.x"] = vc + 1.7 * eps, xr + 0.17 * eps
        x = xr
    ref["flow_mel"] = x.clone()
    cand["flow_mel"] = x + 1e-3 * torch.randn(1, 80, T, generator=g)
    ref["f0"] = 120.0 + 20.0 * torch.sin(torch.arange(T) / 7.0)[None]
    cand["f0"] = ref["f0"] + 0.5
    n = torch.arange(N, dtype=torch.float32)
    ref["audio"] = (0.4 * torch.sin(2 * torch.pi * 220.0 * n / 24000.0))[None]
    ca = ref["audio"].clone() * 1.01
    ca[0, 12000:12100] = float("nan")
    cand["audio"] = ca
    rp, cp = d / "ref.safetensors", d / "cand.safetensors"
    write_trace(rp, ref, {"pipeline": "reference", "model": "synthetic", "sample_rate": 24000})
    write_trace(cp, cand, {"pipeline": "candidate", "model": "synthetic", "sample_rate": 24000})
    return rp, cp


@pytest.fixture(scope="module")
def nan_report(tmp_path_factory) -> Path:
    from parity.cli import report_from_saved

    d = tmp_path_factory.mktemp("browser")
    rp, cp = _synthetic_traces(d)
    path, result = report_from_saved([str(rp), str(cp)], d / "report.html")
    assert result.verdict == "fail"
    return path


def test_report_renders_in_chromium(chromium, nan_report):
    t0 = time.perf_counter()
    out = check_page(nan_report, SCREENSHOT, chromium)
    assert out["console_errors"] == [], out["console_errors"]
    assert out["images"], "the report has no images"
    for img in out["images"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, img
    assert len(out["audio"]) == 3, out["audio"]
    for d in out["audio"]:
        assert isinstance(d, (int, float)) and 0 < d < 1e6, out["audio"]  # finite, loaded
    assert out["title"].startswith("parity FAIL")
    for sid in ("verdict", "diagnosis", "stages", "listen", "raw-stats"):
        assert sid in out["sections"]
    assert SCREENSHOT.exists() and SCREENSHOT.stat().st_size > 10_000
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert time.perf_counter() - t0 < 30


# ---------------------------------------------------------------------------------------------
# a streaming session's report: its ODE-step and F0 sections, rendered and screenshot one by one

SECTION_JS = """
(async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = r; i.onerror = r; })));
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const out = {};
  for (const id of IDS) {
    const s = document.getElementById(id);
    if (!s) { out[id] = null; continue; }
    const r = s.getBoundingClientRect();
    out[id] = {x: r.left + window.scrollX, y: r.top + window.scrollY, w: r.width, h: r.height,
               text: s.innerText,
               images: Array.from(s.querySelectorAll('img')).map(i => ({w: i.naturalWidth, h: i.naturalHeight,
                                                                      shown: i.getBoundingClientRect().width})),
               rows: Array.from(s.querySelectorAll('tr[data-chunk]')).map(t => t.getAttribute('data-chunk'))};
  }
  return JSON.stringify(out);
})()
"""


def section_screenshots(html: Path, ids: tuple[str, ...], out_dir: Path, binary: str) -> dict:
    """Load ``html``, open its details, and screenshot each section (clipped to it, beyond the viewport):
    {id: {x, y, w, h, text, images, rows, png}}."""
    browser = Chromium(binary)
    cdp = None
    try:
        cdp = CDP(browser.page_ws())
        cdp.call("Page.enable")
        cdp.call("Runtime.enable")
        cdp.call("Emulation.setDeviceMetricsOverride", width=1280, height=1600, deviceScaleFactor=1, mobile=False)
        cdp.call("Page.navigate", url=html.resolve().as_uri())
        cdp.wait_event("Page.loadEventFired")
        res = cdp.call("Runtime.evaluate", expression=SECTION_JS.replace("IDS", json.dumps(list(ids))),
                       awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"section script failed: {res['exceptionDetails']}")
        out = json.loads(res["result"]["value"])
        for sid, box in out.items():
            if not box:
                continue
            shot = cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                            clip={"x": box["x"], "y": box["y"], "width": box["w"], "height": box["h"], "scale": 1})
            png = out_dir / f"browser-session-{sid}.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            png.write_bytes(base64.b64decode(shot["data"]))
            box["png"] = png
        return out
    finally:
        if cdp is not None:
            cdp.ws.close()
        browser.close()


def _pixels_near(png: Path, rgb: tuple[int, int, int], tol: int = 40) -> int:
    """How many pixels of the screenshot are within ``tol`` of ``rgb`` (per channel)."""
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(a - np.array(rgb)).max(axis=2) <= tol).sum())


C0, C1 = (31, 119, 180), (255, 127, 14)  # matplotlib's first two colours: chunk 0 and the last chunk's lines


@pytest.fixture(scope="module")
def session_report(tmp_path_factory) -> tuple[Path, object]:
    """The report of a passing streaming session of the tiny model (fixtures/sessions/stream: 4 calls, the first
    and the last with their ODE steps recorded)."""
    from parity.capture.runner import RunMode
    from parity.harness import Harness, ModelSpec
    from parity.judge.spec import ComparisonSpec
    from parity.present.report import build_report
    from parity.project import ProjectConfig

    s = Harness(project=ProjectConfig(), spec=ComparisonSpec(floors=None))
    model = s.model(ModelSpec("tiny"))
    case = s.run(model, s.candidate(model, "fp32-sdpa", ()), ROOT / "fixtures" / "sessions" / "stream.safetensors",
                 RunMode.streaming_session(), local=False)
    assert case.result.verdict == "pass"
    path = build_report(case.result, tmp_path_factory.mktemp("browser-session") / "session.html", case=case)
    return path, case


def test_session_report_steps_and_f0_sections_in_chromium(chromium, session_report):
    """Screenshots of the session report's ODE-step and F0 sections: each shows its figure (decoded, drawn at
    a readable width), the step figure one line per recorded chunk (two colours), the F0 figure both sides,
    the tables a row per step of each recorded chunk and a row per vocoder call; no 'no steps'/'no f0' text."""
    path, case = session_report
    n_calls = len(case.result.session["chunks"])
    recorded = sorted({r.chunk for r in case.result.steps})
    out = section_screenshots(path, ("steps", "f0"), ROOT / "reports", chromium)
    steps, f0 = out["steps"], out["f0"]
    assert steps and f0, out
    for sec in (steps, f0):
        assert sec["images"] and all(i["w"] > 0 and i["h"] > 0 and i["shown"] > 400 for i in sec["images"]), sec
        assert sec["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and sec["h"] > 300
    assert "no ODE steps" not in steps["text"] and "no f0" not in f0["text"].lower()
    assert f"streaming session: the ODE steps of {len(recorded)} of its {n_calls} calls" in steps["text"]
    assert sorted(set(steps["rows"])) == [str(c) for c in recorded] and len(steps["rows"]) == 10 * len(recorded)
    assert f0["rows"] == [str(c) for c in range(n_calls)] and f0["text"].count("pass") >= n_calls
    # the pixels: two chunk colours in the step figure, the candidate's dashed F0 over the reference's line
    assert _pixels_near(steps["png"], C0) > 200 and _pixels_near(steps["png"], C1) > 200
    assert _pixels_near(f0["png"], C1) > 200 and _pixels_near(f0["png"], (64, 64, 64), 20) > 200


if __name__ == "__main__":  # python tests/test_report_browser.py REPORT.html [SCREENSHOT.png]
    import sys

    print(json.dumps(check_page(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else SCREENSHOT),
                     indent=1))
