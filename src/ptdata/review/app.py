"""The review web app (FastAPI): login, a reviewer's queues, the keyboard-first review page,
the admin pages (progress, agreement), and the JSON API the page uses.

Security: tokens (from `ptdata review add-reviewer`) are stored hashed; a login form (itself
protected by a double-submit token) turns a token into a session, an HttpOnly, SameSite=Strict
cookie whose id is stored hashed; an API client may instead send `Authorization: Bearer TOKEN`
(no cookie, so no CSRF exposure). Every POST made with a session cookie must carry the
session's CSRF token (the `X-CSRF-Token` header or a `csrf` form field), compared in constant
time. A reviewer reads only the queues they are assigned to (403 otherwise, whether or not the
queue exists) and never another reviewer's answers; admin pages need the admin role (403). No
auth: 401 for the API, a redirect to the login page for pages. Bodies are size-limited before
they are read (413), validated before any work (422). Every page escapes every value and sends
a Content-Security-Policy that allows only the package's own script and stylesheet, so record
text (untrusted) can never run as code; the page script renders it as text.
"""

import hmac
import html
import time
from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

import orjson
from pydantic import ValidationError

from ..flywheel.server import BodyLimit, run_sync
from .present import AnswerIn, Invalid, payload, to_screen, to_stored
from .rubric import Rubric
from .store import _NAME_RX, ReviewStore

COOKIE, LOGIN_COOKIE = "ptdata_review", "ptdata_review_login"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"), (b"cache-control", b"no-store")]
MAX_POS = 2**31 - 1
STATIC = {"review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}


class SecurityHeaders:
    """ASGI middleware: the security headers on every response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with(msg):
            if msg["type"] == "http.response.start":
                have = {k.lower() for k, _ in msg.get("headers", [])}
                msg["headers"] = list(msg.get("headers", [])) + [h for h in SECURITY_HEADERS if h[0] not in have]
            await send(msg)

        return await self.app(scope, receive, send_with)


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def shell(title: str, body: str, who: dict | None = None, csrf: str | None = None, attrs: str = "") -> str:
    """A page: the package's stylesheet, a header with the reviewer and a logout form."""
    top = ""
    if who is not None:
        admin = " · <a href='/admin'>admin</a>" if who["role"] == "admin" else ""
        logout = (f"<form method='post' action='/logout'><input type='hidden' name='csrf' value='{_e(csrf)}'>"
                  "<button type='submit'>log out</button></form>") if csrf else ""
        top = (f"<header class='top'><b>ptdata review</b><a href='/'>queues</a>{admin}<span class='spacer'></span>"
               f"<span>{_e(who['name'])} ({_e(who['role'])})</span>{logout}</header>")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<link rel='stylesheet' href='/static/review.css'></head><body{attrs}>{top}<main>{body}</main></body></html>")


def make_app(store: ReviewStore | str, max_body_bytes: int = 1 << 20, secure_cookies: bool = False):
    """The ASGI app (wrapped in the body limit and the security headers) and the FastAPI app."""
    from fastapi import FastAPI, Path, Query, Request
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

    store = ReviewStore(store) if isinstance(store, str) else store
    # positions are stored as 32-bit integers (PostgreSQL's INTEGER): a larger one is a 422, not a 500
    Pos = Annotated[int, Path(ge=0, le=MAX_POS)]
    After = Annotated[int, Query(ge=-1, le=MAX_POS)]
    app = FastAPI(title="ptdata review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    queue_cache: dict[str, tuple[dict, Rubric]] = {}

    def err(status: int, message: str, kind: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)

    def page(body: str, status: int = 200, **kw) -> HTMLResponse:
        return HTMLResponse(shell(**kw, body=body), status_code=status)

    def cookie(resp: Response, name: str, value: str, max_age: int | None = None, path: str = "/") -> None:
        resp.set_cookie(name, value, max_age=max_age, path=path, httponly=True, samesite="strict", secure=secure_cookies)

    async def who(request: Request) -> tuple[dict | None, str | None]:
        """(reviewer, CSRF token): None for a bearer token (no cookie, nothing to forge)."""
        h = request.headers.get("authorization", "")
        if h.startswith("Bearer ") and h[7:].strip():
            return await run_sync(store.reviewer_by_token, h[7:].strip()), None
        sid = request.cookies.get(COOKIE)
        if sid:
            s = await run_sync(store.session, sid)
            if s is not None:
                return s
        return None, None

    def csrf_ok(request: Request, csrf: str | None, form: dict | None = None) -> bool:
        if csrf is None:  # bearer auth
            return True
        sent = request.headers.get("x-csrf-token") or ((form or {}).get("csrf") or [""])[0]
        return bool(sent) and hmac.compare_digest(sent.encode(), csrf.encode())

    async def queue_of(name: str) -> tuple[dict, Rubric] | None:
        if not _NAME_RX.fullmatch(name):
            return None
        if name not in queue_cache:
            q = await run_sync(store.queue, name)
            if q is None:
                return None
            queue_cache[name] = (q, Rubric.model_validate({k: v for k, v in q["rubric"].items() if k != "version"}))
        return queue_cache[name]

    async def reviewer_queue(request: Request, name: str, post: bool = False):
        """(reviewer, queue, rubric, member) for a reviewer's own queue, or an error response."""
        r, csrf = await who(request)
        if r is None:
            return err(401, "log in first (or send Authorization: Bearer TOKEN)", "auth")
        if post and not csrf_ok(request, csrf):
            return err(403, "missing or wrong CSRF token (X-CSRF-Token)", "csrf")
        found = await queue_of(name)
        m = await run_sync(store.member, found[0]["id"], r["id"]) if found else None
        if m is None:
            return err(403, "you are not assigned to this queue", "forbidden")
        return r, found[0], found[1], m

    async def admin_of(request: Request, api: bool):
        r, csrf = await who(request)
        if r is None:
            return err(401, "log in first", "auth") if api else RedirectResponse("/login", status_code=303)
        if r["role"] != "admin":
            return err(403, "admin pages need the admin role", "forbidden") if api else \
                page("<h1>Forbidden</h1><p>Admin pages need the admin role.</p>", 403, title="forbidden", who=r, csrf=csrf)
        return r, csrf

    async def form_of(request: Request) -> dict[str, list[str]]:
        """An urlencoded form body (a few fields; anything else reads as an empty form)."""
        try:
            return parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
        except ValueError:
            return {}

    # ---- static files: the package's own script and stylesheet -------------------------------
    files = {n: (resources.files("ptdata.review") / "static" / n).read_bytes() for n in STATIC}

    @app.get("/static/{name}")
    async def static(name: str):
        if name not in STATIC:
            return err(404, "no such file", "not_found")
        return Response(files[name], media_type=STATIC[name].split(";")[0], headers={"cache-control": "no-cache"})

    @app.get("/favicon.ico")
    async def favicon():
        return Response(status_code=204)

    # ---- login ---------------------------------------------------------------------------------
    def login_page(message: str = "", status: int = 200) -> HTMLResponse:
        import secrets

        t = secrets.token_urlsafe(24)
        body = (f"<form class='login' method='post' action='/login'><h1>ptdata review</h1>"
                f"{'<p class=error>' + _e(message) + '</p>' if message else ''}"
                "<label for='token'>Your reviewer token</label>"
                "<input id='token' name='token' type='password' autocomplete='off' autofocus required>"
                f"<input type='hidden' name='login_csrf' value='{_e(t)}'>"
                "<button type='submit'>log in</button></form>")
        resp = HTMLResponse(shell("ptdata review: log in", body), status_code=status)
        cookie(resp, LOGIN_COOKIE, t, max_age=3600, path="/login")
        return resp

    @app.get("/login")
    async def login_get():
        return login_page()

    @app.post("/login")
    async def login_post(request: Request):
        form = await form_of(request)
        sent, kept = (form.get("login_csrf") or [""])[0], request.cookies.get(LOGIN_COOKIE, "")
        if not sent or not hmac.compare_digest(sent.encode(), kept.encode()):
            return login_page("The form expired; log in again.", 403)
        token = (form.get("token") or [""])[0].strip()
        r = await run_sync(store.reviewer_by_token, token) if token else None
        if r is None:
            return login_page("Unknown token.", 401)
        sid, _ = await run_sync(store.new_session, r["id"])
        resp = RedirectResponse("/", status_code=303)
        cookie(resp, COOKIE, sid, max_age=12 * 3600)
        resp.delete_cookie(LOGIN_COOKIE, path="/login")
        return resp

    @app.post("/logout")
    async def logout(request: Request):
        form = await form_of(request)
        r, csrf = await who(request)
        if r is not None and not csrf_ok(request, csrf, form):
            return page("<h1>Forbidden</h1><p>Missing or wrong CSRF token.</p>", 403, title="forbidden")
        if request.cookies.get(COOKIE):
            await run_sync(store.end_session, request.cookies[COOKIE])
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # ---- pages ---------------------------------------------------------------------------------
    @app.get("/")
    async def home(request: Request):
        r, csrf = await who(request)
        if r is None:
            return RedirectResponse("/login", status_code=303)
        qs = await run_sync(store.queues, r["id"])
        rows = "".join(f"<tr><td><a href='/q/{quote(q['name'])}'>{_e(q['name'])}</a></td><td>{q['done']:,} of {q['total']:,}</td>"
                       f"<td>{_e(', '.join(f'{k} {v:,}' for k, v in (q['kinds'] or {}).items()))}</td></tr>" for q in qs)
        body = ("<h1>Your queues</h1>" + (f"<table class='list'><tr><th>queue</th><th>your progress</th><th>records</th></tr>{rows}</table>"
                                          if qs else "<p class='muted'>You are not assigned to any queue yet.</p>")
                + "<p class='muted'>Open a queue and press <span class='key'>?</span> for the keys.</p>")
        return page(body, title="ptdata review", who=r, csrf=csrf)

    @app.get("/q/{name}")
    async def review_page(name: str, request: Request):
        r, csrf = await who(request)
        if r is None:
            return RedirectResponse("/login", status_code=303)
        found = await queue_of(name)
        if found is None or await run_sync(store.member, found[0]["id"], r["id"]) is None:
            return page("<h1>Forbidden</h1><p>You are not assigned to this queue.</p>", 403, title="forbidden", who=r, csrf=csrf)
        body = ("<div id='bar'><b id='queue-name'></b><span id='record-pos' data-pos=''></span><span id='progress'></span>"
                "<span id='status' role='status' aria-live='polite'></span><span class='muted'>press <span class='key'>?</span> "
                "for the keys</span></div><div class='layout'><div id='record'></div><div id='side'><div id='form'></div>"
                "<div id='edit'></div></div></div><div id='help' hidden></div><script src='/static/review.js'></script>")
        attrs = f" data-queue='{_e(name)}' data-csrf='{_e(csrf or '')}'"
        return page(body, title=f"ptdata review: {name}", who=r, csrf=csrf, attrs=attrs)

    @app.get("/admin")
    async def admin_page(request: Request):
        got = await admin_of(request, api=False)
        if not isinstance(got, tuple):
            return got
        r, csrf = got
        qs = await run_sync(store.queues)
        people = await run_sync(store.reviewers)
        parts = ["<h1>Admin</h1><h2>Queues</h2><table class='list'><tr><th>queue</th><th>records</th><th>overlap</th>"
                 "<th>answers</th><th>per reviewer</th></tr>"]
        for q in qs:
            prog = await run_sync(store.progress, q["id"])
            per = ", ".join(f"{p['name']} {p['done']:,}/{p['total']:,}" for p in prog)
            parts.append(f"<tr><td><a href='/admin/q/{quote(q['name'])}'>{_e(q['name'])}</a></td><td>{q['items']:,}</td>"
                         f"<td>{q['overlap']}</td><td>{q['done']:,} of {q['total']:,}</td><td>{_e(per)}</td></tr>")
        parts.append("</table><h2>Reviewers</h2><table class='list'><tr><th>name</th><th>role</th><th>active</th></tr>")
        parts += [f"<tr><td>{_e(p['name'])}</td><td>{_e(p['role'])}</td><td>{'yes' if p['active'] else 'no'}</td></tr>" for p in people]
        parts.append("</table><p class='muted'>Reviewers and their tokens are made with <code>ptdata review add-reviewer</code>.</p>")
        return page("".join(parts), title="ptdata review: admin", who=r, csrf=csrf)

    @app.get("/admin/q/{name}")
    async def agreement_page(name: str, request: Request):
        from .report import queue_stats, stats_html

        got = await admin_of(request, api=False)
        if not isinstance(got, tuple):
            return got
        r, csrf = got
        if await queue_of(name) is None:
            return page("<h1>Not found</h1>", 404, title="not found", who=r, csrf=csrf)
        s = await run_sync(queue_stats, store, name)
        return page(stats_html(s), title=f"agreement: {name}", who=r, csrf=csrf)

    # ---- the API ---------------------------------------------------------------------------------
    @app.get("/api/me")
    async def me(request: Request):
        r, _ = await who(request)
        if r is None:
            return err(401, "log in first (or send Authorization: Bearer TOKEN)", "auth")
        qs = await run_sync(store.queues, r["id"])
        return {"name": r["name"], "role": r["role"],
                "queues": [{"name": q["name"], "done": q["done"], "total": q["total"]} for q in qs]}

    @app.get("/api/q/{name}")
    async def queue_meta(name: str, request: Request):
        got = await reviewer_queue(request, name)
        if not isinstance(got, tuple):
            return got
        _, q, rubric, m = got
        return {"queue": q["name"], "rubric": rubric.as_dict(), "progress": {"done": m["done"], "total": m["total"]}}

    async def item_at(q: dict, r: dict, m: dict, pos: int):
        a = await run_sync(store.assignment, q["id"], r["id"], pos)
        if a is None:
            return err(404, f"no record {pos} in your share of this queue", "not_found")
        return JSONResponse(payload(a, m))

    @app.get("/api/q/{name}/next")
    async def next_record(name: str, request: Request, after: After = -1):
        got = await reviewer_queue(request, name)
        if not isinstance(got, tuple):
            return got
        r, q, _, m = got
        pos = await run_sync(store.next_open, q["id"], r["id"], after)
        if pos is None:
            return {"done": True, "progress": {"done": m["done"], "total": m["total"]}}
        return await item_at(q, r, m, pos)

    @app.get("/api/q/{name}/a/{pos}")
    async def get_record(name: str, pos: Pos, request: Request):
        got = await reviewer_queue(request, name)
        if not isinstance(got, tuple):
            return got
        r, q, _, m = got
        return await item_at(q, r, m, pos)

    async def json_body(request: Request) -> Any:
        raw = await request.body()
        try:
            return orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            raise Invalid("the body is not JSON") from None

    async def assigned(request: Request, name: str, pos: int):
        """(reviewer, queue, rubric, progress, assignment) of a position in the reviewer's share, or the error response."""
        got = await reviewer_queue(request, name, post=True)
        if not isinstance(got, tuple):
            return got
        r, q, _, _ = got
        a = await run_sync(store.assignment, q["id"], r["id"], pos)
        if a is None:
            return err(404, f"no record {pos} in your share of this queue", "not_found")
        return (*got, a)

    @app.post("/api/q/{name}/a/{pos}")
    async def answer(name: str, pos: Pos, request: Request):
        got = await assigned(request, name, pos)
        if not isinstance(got, tuple):
            return got
        r, q, rubric, m, a = got
        try:
            ans = AnswerIn.model_validate(await json_body(request))
        except Invalid as e:
            return err(422, str(e), "invalid")
        except ValidationError as e:
            first = e.errors()[0]
            return err(422, f"{'.'.join(map(str, first.get('loc', ()))) or 'body'}: {first.get('msg')}", "invalid")
        try:
            stored = to_stored(ans, rubric, a)
        except Invalid as e:
            return err(422, str(e), "invalid")
        first = await run_sync(store.submit, q["id"], r["id"], pos, stored, q["rubric_version"])
        nxt = await run_sync(store.next_open, q["id"], r["id"], pos)
        done = m["done"] + (1 if first else 0)
        return {"stored": True, "first": first, "next": nxt, "progress": {"done": done, "total": m["total"]}}

    @app.post("/api/q/{name}/a/{pos}/retract")
    async def retract(name: str, pos: Pos, request: Request):
        got = await assigned(request, name, pos)
        if not isinstance(got, tuple):
            return got
        r, q, _, _, a = got
        old = await run_sync(store.retract, q["id"], r["id"], pos)
        if old is None:
            return err(409, "that record has no answer to undo", "conflict")
        return {"retracted": True, "answer": to_screen(old, a["swap"])}

    @app.get("/api/admin/q/{name}/report")
    async def report_api(name: str, request: Request):
        from .report import queue_stats

        got = await admin_of(request, api=True)
        if not isinstance(got, tuple):
            return got
        if await queue_of(name) is None:
            return err(404, f"no queue {name!r}", "not_found")
        return JSONResponse(orjson.loads(orjson.dumps(await run_sync(queue_stats, store, name))))

    @app.exception_handler(404)
    async def not_found(request: Request, exc):  # noqa: ANN001
        return err(404, "not found", "not_found")

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        return err(422, f"{'.'.join(map(str, first.get('loc', ()))) or 'request'}: {first.get('msg', 'invalid')}", "invalid")

    app.state.started = time.time()
    return SecurityHeaders(BodyLimit(app, max_body_bytes, timeout=30.0)), app
