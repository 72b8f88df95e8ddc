"""`--serve [HOST:]PORT`: a live page of a render (its newest snapshot, the loss curve of each
term, progress and ETA), updating without a reload, for the render's lifetime.

The standard library's `ThreadingHTTPServer` serves three things and nothing else: the page,
`status.json` and `snapshot.jpg` (the newest snapshot, from memory); no path reaches the file
system. It binds 127.0.0.1 unless told otherwise (reach it through an SSH tunnel). A bind
beyond the loopback needs a token, which the page asks for and sends with each request;
without one, requests must name a loopback host (a DNS-rebinding page cannot read it).
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import math
import re
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .errors import UserError
from .logprogress import Estimator
from .snapshot import Snapshot

DEFAULT_HOST = "127.0.0.1"
#: Loss-curve points kept; past this every other one is dropped (the curve keeps its shape).
HISTORY_POINTS = 4000
TOKEN_HEADER = "X-Hiresnst-Token"
_LOOPBACK_NAMES = ("localhost", "localhost.", "ip6-localhost")


def parse_serve(text: str) -> tuple[str, int]:
    """`PORT`, `HOST:PORT` or `[IPv6]:PORT` → (host, port); the host defaults to 127.0.0.1."""
    m = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]:|([^:\[\]]+):)?(\d{1,5})", text.strip())
    if not m or int(m.group(3)) > 65535:
        raise UserError(
            f"--serve must be PORT or HOST:PORT (e.g. 8000 or 0.0.0.0:8000), got {text!r}"
        )
    return m.group(1) or m.group(2) or DEFAULT_HOST, int(m.group(3))


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LiveState:
    """What the page shows, written by the render's thread and read by the server's."""

    def __init__(self, title: str) -> None:
        self.title = title
        self._lock = threading.Lock()
        self._estimator = Estimator()
        self._status: dict[str, Any] = {"title": title, "state": "starting"}
        self._history: list[list[Any]] = []
        self._stride = 1  # keep every `stride`-th step in the history
        self._snapshot: Snapshot | None = None
        self._seq = 0
        self._started = time.time()

    def update(self, p: Any) -> None:
        """The render's progress callback."""
        est = self._estimator.update(p)
        step = p.steps_before + p.step
        with self._lock:
            self._status.update(
                state="rendering",
                level=p.level,
                levels=p.levels,
                size=[int(p.size[1]), int(p.size[0])],
                step=p.step + p.step_fraction,
                steps=p.steps,
                loss=None if p.loss != p.loss else p.loss,
                terms=dict(p.terms),
                percent=est.percent,
                mp_rate=est.mp_rate,
                eta_level=est.eta_level,
                eta_render=est.eta_render,
                elapsed=time.time() - self._started,
                host_seconds=p.host_seconds,
                device_seconds=p.device_seconds,
            )
            if p.step_fraction or p.loss != p.loss:
                return
            if self._history and self._history[-1][0] == step:
                return
            if step % self._stride == 0:
                self._history.append([step, p.level, p.loss, dict(p.terms)])
            if len(self._history) > HISTORY_POINTS:
                self._history = self._history[::2]
                self._stride *= 2

    def set_snapshot(self, snap: Snapshot) -> None:
        with self._lock:
            self._seq += 1
            self._snapshot = snap

    def finish(self, message: str, failed: bool = False) -> None:
        with self._lock:
            self._status.update(state="failed" if failed else "done", message=message)

    def status_json(self) -> bytes:
        with self._lock:
            snap = self._snapshot
            body = {
                **self._status,
                "history": self._history,
                "snapshot": None
                if snap is None
                else {
                    "seq": self._seq,
                    "level": snap.level,
                    "levels": snap.levels,
                    "step": snap.step,
                    "level_step": snap.level_step,
                    "size": [int(snap.size[1]), int(snap.size[0])],
                },
            }
            return json.dumps(_finite(body), allow_nan=False).encode()

    def snapshot_jpeg(self) -> bytes | None:
        with self._lock:
            return None if self._snapshot is None else self._snapshot.jpeg


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity (a diverging render has them): those become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: LiveState, token: str | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.state = state
        self.token = token
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "hiresnst"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        url = urlsplit(self.path)
        if not self._host_allowed():
            self._send(HTTPStatus.FORBIDDEN, b"forbidden host\n", "text/plain")
            return
        if url.path in ("/", "/index.html"):
            page = PAGE.replace("{{TITLE}}", html.escape(self.server.state.title))
            self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
            return
        if url.path not in ("/status.json", "/snapshot.jpg"):
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
            return
        if not self._authorised(url.query):
            self._send(HTTPStatus.UNAUTHORIZED, b"token required\n", "text/plain")
            return
        if url.path == "/status.json":
            self._send(HTTPStatus.OK, self.server.state.status_json(), "application/json")
            return
        jpeg = self.server.state.snapshot_jpeg()
        if jpeg is None:
            self._send(HTTPStatus.NOT_FOUND, b"no snapshot yet\n", "text/plain")
        else:
            self._send(HTTPStatus.OK, jpeg, "image/jpeg")

    def _host_allowed(self) -> bool:
        """Without a token, only requests to a loopback name (against DNS rebinding)."""
        if self.server.token is not None:
            return True
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name)

    def _authorised(self, query: str) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get(TOKEN_HEADER) or (parse_qs(query).get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), token.encode())

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "img-src blob:; connect-src 'self'",
        )
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Quiet: the render's own progress owns stderr."""


class LiveServer:
    """The live page's server, on a daemon thread, for a `with` block."""

    def __init__(self, state: LiveState, host: str, port: int, token: str | None) -> None:
        if not is_loopback(host) and not token:
            raise UserError(
                f"--serve {host}:{port} listens beyond this machine: give --serve-token SECRET "
                "(the page asks for it), or serve on 127.0.0.1 and use an SSH tunnel"
            )
        try:
            self._server = _Server((host, port), state, token or None)
        except OSError as e:
            raise UserError(
                f"--serve {host}:{port}: cannot listen ({e.strerror or e}); pick another port"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="hiresnst-serve", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def __enter__(self) -> LiveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hiresnst: {{TITLE}}</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#16181c;color:#ddd}
header{padding:10px 16px;background:#22252b;display:flex;gap:16px;align-items:center}
h1{font-size:16px;margin:0;font-weight:600}
#state{padding:2px 8px;border-radius:4px;background:#3a3f48}
main{display:grid;grid-template-columns:minmax(0,3fr) minmax(280px,2fr);gap:16px;padding:16px}
#shot{max-width:100%;max-height:80vh;display:block;margin:auto;background:#000}
#caption{color:#999;text-align:center;margin-top:4px}
.bar{height:10px;background:#333;border-radius:5px;overflow:hidden;margin:6px 0}
.bar div{height:100%;background:#5b9bd5;width:0}
#chart{width:100%;height:300px;background:#1d2026;border-radius:4px}
#legend span{margin-right:12px}
#auth{display:none;padding:16px}
table{border-collapse:collapse}td{padding:2px 10px 2px 0}
</style></head><body>
<header><h1>hiresnst: {{TITLE}}</h1><span id="state">connecting</span></header>
<form id="auth"><label>This render's page needs its token (--serve-token):
<input id="token" type="password" autocomplete="off"></label> <button>Open</button></form>
<main><section><img id="shot" alt="newest snapshot"><div id="caption">no snapshot yet</div>
</section><section>
<div id="progress">waiting for the first step</div>
<div>level</div><div class="bar"><div id="lbar"></div></div>
<div>whole render</div><div class="bar"><div id="rbar"></div></div>
<table id="facts"></table>
<canvas id="chart" width="600" height="300"></canvas><div id="legend"></div>
</section></main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let token = params.get("token") || sessionStorage.getItem("hiresnst-token") || "";
let seq = -1, timer = null;
const COLORS = {loss: "#eeeeee", style: "#e5a445", content: "#5b9bd5", tv: "#8bc34a",
  mrf: "#c678dd"};
function fmt(s) {
  if (s === null || s === undefined) return "?";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), x = s % 60;
  const p = (v) => String(v).padStart(2, "0");
  return h ? h + ":" + p(m) + ":" + p(x) : m + ":" + p(x);
}
async function get(path) {
  const r = await fetch(path, {cache: "no-store",
    headers: token ? {"X-Hiresnst-Token": token} : {}});
  if (r.status === 401) { $("auth").style.display = "block"; throw new Error("token"); }
  if (!r.ok) throw new Error(String(r.status));
  return r;
}
$("auth").addEventListener("submit", (e) => {
  e.preventDefault(); token = $("token").value;
  sessionStorage.setItem("hiresnst-token", token); $("auth").style.display = "none";
  tick();
});
function draw(history) {
  const c = $("chart"), g = c.getContext("2d");
  c.width = c.clientWidth; const W = c.width, H = c.height;
  g.clearRect(0, 0, W, H);
  if (history.length < 2) return;
  const series = {loss: history.map((h) => [h[0], h[2]])};
  for (const h of history) for (const k in h[3]) {
    (series[k] = series[k] || []).push([h[0], h[3][k]]); }
  let lo = Infinity, hi = -Infinity;
  for (const k in series) for (const [, v] of series[k]) if (v > 0) {
    lo = Math.min(lo, Math.log10(v)); hi = Math.max(hi, Math.log10(v)); }
  if (!isFinite(lo)) return;
  if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
  const x0 = history[0][0], x1 = history[history.length - 1][0] || 1;
  const X = (s) => 40 + (W - 50) * (s - x0) / Math.max(1, x1 - x0);
  const Y = (v) => 10 + (H - 30) * (hi - Math.log10(v)) / (hi - lo);
  g.fillStyle = "#888"; g.font = "11px sans-serif";
  g.fillText("1e" + hi.toFixed(1), 2, 14); g.fillText("1e" + lo.toFixed(1), 2, H - 20);
  g.fillText("step " + x0, 40, H - 4); g.fillText("step " + x1, W - 70, H - 4);
  $("legend").innerHTML = "";
  for (const k in series) {
    g.strokeStyle = COLORS[k] || "#aaa"; g.beginPath(); let first = true;
    for (const [s, v] of series[k]) { if (!(v > 0)) continue;
      if (first) { g.moveTo(X(s), Y(v)); first = false; } else g.lineTo(X(s), Y(v)); }
    g.stroke();
    const span = document.createElement("span");
    span.style.color = COLORS[k] || "#aaa"; span.textContent = "\u2014 " + k;
    $("legend").appendChild(span);
  }
}
function facts(s) {
  const rows = [["loss", s.loss === null || s.loss === undefined ? "-" : s.loss.toPrecision(4)]];
  for (const k in (s.terms || {})) rows.push([k, s.terms[k].toPrecision(4)]);
  rows.push(["speed", s.mp_rate ? s.mp_rate.toPrecision(3) + " MP\u00b7it/s" : "-"]);
  rows.push(["ETA level", fmt(s.eta_level)], ["ETA render", fmt(s.eta_render)]);
  rows.push(["elapsed", fmt(s.elapsed)]);
  const t = $("facts"); t.innerHTML = "";
  for (const [a, b] of rows) { const tr = t.insertRow();
    tr.insertCell().textContent = a; tr.insertCell().textContent = b; }
}
async function tick() {
  clearTimeout(timer);
  let delay = 1000;
  try {
    const s = await (await get("status.json")).json();
    $("state").textContent = s.state + (s.message ? ": " + s.message : "");
    if (s.level !== undefined) {
      $("progress").textContent = "level " + (s.level + 1) + "/" + s.levels + " (" +
        s.size[0] + "\u00d7" + s.size[1] + ")  step " + (+s.step.toFixed(2)) + "/" + s.steps +
        "  " + s.percent.toFixed(1) + "% of the render";
      $("lbar").style.width = (100 * s.step / Math.max(1, s.steps)) + "%";
      $("rbar").style.width = s.percent + "%";
      facts(s);
    }
    if (s.snapshot && s.snapshot.seq !== seq) {
      const blob = await (await get("snapshot.jpg?seq=" + s.snapshot.seq)).blob();
      const old = $("shot").src;
      $("shot").src = URL.createObjectURL(blob);
      if (old) URL.revokeObjectURL(old);
      seq = s.snapshot.seq;
      $("shot").dataset.step = s.snapshot.step;
      $("caption").textContent = "level " + (s.snapshot.level + 1) + "/" + s.snapshot.levels +
        ", step " + s.snapshot.level_step + " (" + s.snapshot.size[0] + "\u00d7" +
        s.snapshot.size[1] + " px)";
    }
    draw(s.history || []);
    if (s.state === "done" || s.state === "failed") delay = 10000;
  } catch (e) {
    if (e.message === "token") return;
    $("state").textContent = "disconnected (the render may have ended)";
    delay = 5000;
  }
  timer = setTimeout(tick, delay);
}
$("shot").addEventListener("load", () => { $("shot").dataset.loaded = $("shot").naturalWidth; });
tick();
</script></body></html>
"""
