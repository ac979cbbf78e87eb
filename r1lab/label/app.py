"""The labelling page: Flask with Jinja templates over a ``LabelStore``.

    GET  /                  the first trace not fully labelled (or "all done")
    GET  /trace/<i>         trace i: its steps, label buttons, reference and exact checks on demand
    GET  /next?after=<i>    the next trace not fully labelled after i
    POST /api/label         {"id", "step", "label"} -> {"labels", "done", "total"} once fsynced

Every error, bad request or bug, is a page (or JSON for /api) with one line of text, never a
traceback. When a token is set every request must present it (``?token=``, then a cookie).
"""

from __future__ import annotations

import hmac
import sys
from typing import Any

from flask import Flask, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from r1lab.label.store import LABELS, LabelStore

TOKEN_COOKIE = "r1lab_label_token"


def create_app(store: LabelStore, token: str = "") -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # a label request is a few bytes

    def error(status: int, message: str) -> Any:
        if request.path.startswith("/api/"):
            return jsonify({"error": message}), status
        return render_template("error.html", status=status, message=message), status

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Any:
        return error(err.code or 500, f"{err.name}: {err.description}")

    @app.errorhandler(Exception)
    def any_error(err: Exception) -> Any:  # a bug or an I/O failure: one line here and on the page
        message = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        print(f"r1lab label: error on {request.method} {request.path}: {message}", file=sys.stderr)
        return error(500, f"the server could not do that ({message}); nothing saved was lost")

    @app.before_request
    def check_token() -> Any:
        if not token:
            return None
        given = request.args.get("token") or request.headers.get("X-Label-Token") or request.cookies.get(TOKEN_COOKIE) or ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            return error(403, "this labelling server needs its token: open the URL it printed (…/?token=…)")
        return None

    @app.after_request
    def remember_token(resp: Any) -> Any:
        if token and request.args.get("token") == token:
            resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return resp

    @app.get("/")
    def home() -> Any:
        store.refresh()
        i = store.first_unlabelled()
        if i is None:
            done, total = store.progress()
            return render_template("done.html", done=done, total=total)
        return redirect(url_for("trace", i=i))

    @app.get("/next")
    def next_trace() -> Any:
        try:
            after = int(request.args.get("after", "-1"))
        except ValueError:
            return error(400, "after= must be a trace number")
        store.refresh()
        i = store.first_unlabelled(after)
        return redirect(url_for("trace", i=i)) if i is not None else redirect(url_for("home"))

    @app.get("/trace/<int:i>")
    def trace(i: int) -> Any:
        n = len(store.traces)
        if not 0 <= i < n:
            return error(404, f"no trace {i}: traces are numbered 0 to {n - 1}")
        store.refresh()
        t = store.traces[i]
        done, total = store.progress()
        return render_template("label.html", i=i, n=n, trace=t, labels=store.labels(t), checks=t.checks(),
                               done=done, total=total, label_names=LABELS)

    @app.post("/api/label")
    def label() -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return error(400, "expected a JSON object {\"id\", \"step\", \"label\"}")
        tid, step, name = body.get("id"), body.get("step"), body.get("label")
        if not isinstance(tid, str) or tid not in store.index:
            return error(400, f"unknown trace id {tid!r}")
        if not isinstance(step, int) or isinstance(step, bool):
            return error(400, "\"step\" must be an integer")
        if name not in LABELS:
            return error(400, f"unknown label {name!r}; labels are {', '.join(LABELS)}")
        try:
            labels = store.set(tid, step, name)
        except IndexError as err:
            return error(400, str(err))
        done, total = store.progress()
        return jsonify({"labels": labels, "done": done, "total": total})

    @app.after_request
    def no_cache(resp: Any) -> Any:
        resp.headers["Cache-Control"] = "no-store"  # back/forward must show the labels as saved
        return resp

    return app


__all__ = ["create_app"]
