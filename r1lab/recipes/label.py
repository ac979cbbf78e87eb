"""``r1lab label``: a local web page to label the steps of reasoning traces, and label agreement.

    r1lab label --from runs/zero-x --out labels.jsonl        serve on http://127.0.0.1:8765/
    r1lab label --from labels.jsonl --out labels-bob.jsonl   a second annotator, same traces
    r1lab label --agreement labels.jsonl labels-bob.jsonl    Cohen's kappa, agreement with exact checks

Restarting with the same arguments resumes at the first trace not fully labelled, every label
kept (see ``r1lab.label.store``). Serving anywhere but loopback needs a token: ``--token`` or a
random one, printed in the URL to open.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from pathlib import Path

from r1lab import tracking
from r1lab.config import Config
from r1lab.label import agreement, traces
from r1lab.label.app import create_app
from r1lab.label.store import LabelStore
from r1lab.recipes import common


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bindable(host: str, port: int) -> None:
    """StageError naming ``--host``/``--port`` when the page cannot be served there (an unknown
    host name, an address not on this machine, a port in use): werkzeug would print the reason on
    its own line and exit 1."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug binds
            probe.bind(address)
    except OSError as err:
        raise common.StageError(f"label: cannot serve on --host {host} --port {port}: {err.strerror or err}") from None


def main(cfg: Config) -> Path | None:
    lc = cfg.label
    try:
        if lc.agreement:
            a, b = lc.agreement
            rows = agreement.compare(a, b)
            print(tracking.format_table(rows, title=f"step-label agreement: A={a}, B={b} (kappa over good/bad/unsure; exact check: good/bad steps it judges)"))
            return None
        if not lc.source:
            raise common.StageError("label needs --from RUN_FOLDER_OR_TRACES.jsonl (or --agreement A B)")
        out = common.jsonl_out(cfg.out, "label", "LABELS.jsonl, the file the labels go to")
        if out.exists() and Path(lc.source).exists() and out.resolve() == Path(lc.source).resolve():
            raise common.StageError(f"label: --out {out} is the --from file; write the labels to another file")
        trace_list = traces.load(lc.source, lc.n_traces, cfg.seed)
        store = LabelStore(out, trace_list)
    except traces.TraceError as err:
        raise common.StageError(str(err)) from None
    token = lc.token
    if not _loopback(lc.host) and not token:
        token = secrets.token_urlsafe(16)
    app = create_app(store, token)

    from werkzeug.serving import make_server

    check_bindable(lc.host, lc.port)
    server = make_server(lc.host, lc.port, app, threaded=True)
    done, total = store.progress()
    shown_host = f"[{lc.host}]" if ":" in lc.host else lc.host
    url = f"http://{shown_host}:{server.server_port}/" + (f"?token={token}" if token else "")
    print(f"label: {total} traces from {lc.source}, {done} fully labelled; labels go to {out}")
    print(f"label: serving {url}  (Ctrl-C to stop; every label is already saved)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("label: stopped")
    finally:
        server.server_close()
    return out
