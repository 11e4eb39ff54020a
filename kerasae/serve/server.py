"""`kerasae serve`: the zoo as a local web page, each entry's model a canvas and sliders away.

Starlette routes the requests and uvicorn serves them. The pages are Jinja2 templates
(`kerasae/serve/web/templates`) around the cards' Markdown; the page's script (`kerasae/serve/web/static`)
asks the JSON API below, and the server answers through the entry's Keras model, loaded once
with `safe_mode` on whichever backend runs (`kerasae.serve.explore`).

    GET  /                                  the zoo's table (as zoo/README.md)
    GET  /entries/{name}/                   an entry's card and its interactive panel
    GET  /entries/{name}/figures/{file}     the card's figures
    GET  /api/entries/{name}                what the panel needs to lay itself out
    POST /api/entries/{name}/reconstruct    {source, corrupt, label} -> input, noisy, output, code
    POST /api/entries/{name}/decode         {code, label} -> image
    POST /api/entries/{name}/interpolate    {a, b, steps, labels} -> images
    POST /api/entries/{name}/sample         {sampler, n, seed, label} -> images

Safe by default: it binds to 127.0.0.1; an entry name is looked up among the zoo's entries,
never joined into a path as sent; request bodies are capped at `MAX_BODY` bytes and validated
(pydantic) before any model sees them; a bad request is answered 4xx with a one-line message,
an unexpected failure 500 with its type, never a traceback; nothing a request sends is written
or executed.
"""

import logging
import os
import re
import socket
import threading
from typing import Literal, Optional

import markdown
import pydantic
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse, RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from kerasae.assess import cards
from kerasae.errors import KerasaeError
from kerasae.serve import explore
from kerasae.store import zoo

WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
MAX_BODY = 512 * 1024  # bytes: a 280 x 280 drawing is ~10 KB as PNG
ENTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
FIGURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.png")
log = logging.getLogger("kerasae.serve")


# -- requests: validated here, once ---------------------------------------------


class Body(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


class Source(Body):
    """A drawing (a PNG or JPEG data URL) or one of the entry's test images, by index."""

    image: Optional[str] = pydantic.Field(None, max_length=MAX_BODY)
    test: Optional[int] = pydantic.Field(None, ge=0)

    @pydantic.model_validator(mode="after")
    def one_of(self):
        if (self.image is None) == (self.test is None):
            raise ValueError("give exactly one of 'image' (a data URL) and 'test' (an index)")
        return self


Label = Optional[int]


class Reconstruct(Body):
    source: Source
    corrupt: bool = False
    label: Label = None


class Decode(Body):
    code: list[float] = pydantic.Field(max_length=explore.MAX_SLIDERS * 64)
    label: Label = None


class Interpolate(Body):
    a: Source
    b: Source
    steps: int = pydantic.Field(8, ge=2, le=explore.MAX_INTERPOLATION_STEPS)
    labels: tuple[Label, Label] = (None, None)


class Sample(Body):
    sampler: Literal["prior", "gmm"]
    n: int = pydantic.Field(16, ge=1, le=explore.MAX_SAMPLES)
    seed: int = pydantic.Field(0, ge=0, le=2**31 - 1)
    label: Label = None


def _problem(error):
    """One line naming the first bad field of a pydantic `ValidationError`."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


async def _body(request, schema):
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPException(415, "send the request as application/json")
    raw = await request.body()  # the size cap is enforced while it streams in (LimitBody)
    try:
        return schema.model_validate_json(raw)
    except pydantic.ValidationError as e:
        raise HTTPException(400, _problem(e)) from None


class LimitBody:
    """ASGI middleware: a request body over `limit` bytes is answered 413, declared or streamed."""

    def __init__(self, app, limit=MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large(self.limit)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request body over {self.limit} bytes")
            return message

        return await self.app(scope, limited, send)


def _too_large(limit):
    return JSONResponse({"error": f"request body over {limit} bytes"}, status_code=413)


# -- the zoo's entries ----------------------------------------------------------


class Zoo:
    """The served zoo: its entries by name, each `Explorer` loaded on first use and kept."""

    def __init__(self, folder):
        self.folder = os.path.abspath(folder)
        self.explorers = {}
        self.lock = threading.Lock()

    def names(self):
        return zoo.names(self.folder)

    def path(self, name):
        """The folder of the entry called `name`: only names the zoo lists; 404 otherwise."""
        if not ENTRY_NAME.fullmatch(name) or name not in self.names():
            raise HTTPException(404, f"no zoo entry named '{name}'")
        return os.path.join(self.folder, name)

    def explorer(self, name):
        path = self.path(name)
        with self.lock:
            if name not in self.explorers:
                try:
                    self.explorers[name] = explore.Explorer(path)
                except KerasaeError as e:
                    raise HTTPException(500, f"{name}: {e}") from None
            return self.explorers[name]


# -- pages ------------------------------------------------------------------------


class _Links(markdown.treeprocessors.Treeprocessor):
    """Rewrites a card's links for the server: an entry's card to its page, other hrefs kept when
    relative or http(s); anything else (javascript:, data:) dropped."""

    def run(self, root):
        for element in root.iter():
            for attribute in ("href", "src"):
                target = element.get(attribute)
                if target is None:
                    continue
                card = re.fullmatch(r"(?:\.\./)?([A-Za-z0-9][A-Za-z0-9._-]*)/README\.md", target)
                if card:
                    element.set(attribute, f"/entries/{card.group(1)}/")
                elif re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) and not target.startswith(
                    ("http://", "https://")
                ):
                    del element.attrib[attribute]


class _NoRawHtml(markdown.extensions.Extension):
    """Markdown without raw HTML (shown as text) and with `_Links`: a card cannot script the page."""

    def extendMarkdown(self, md):
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        md.treeprocessors.register(_Links(md), "kerasae_links", 0)


def render_markdown(text):
    return markdown.markdown(text, extensions=["tables", "fenced_code", _NoRawHtml()])


# The API's questions: action -> (its request's schema, how an entry's `Explorer` answers it).
ACTIONS = {
    "reconstruct": (Reconstruct, lambda e, b: e.reconstruct(b.source.model_dump(), b.corrupt, b.label)),
    "decode": (Decode, lambda e, b: e.decode(b.code, b.label)),
    "interpolate": (Interpolate, lambda e, b: e.interpolate(b.a.model_dump(), b.b.model_dump(), b.steps, b.labels)),
    "sample": (Sample, lambda e, b: e.sample(b.sampler, b.n, b.seed, b.label)),
}


class Pages:
    """The HTML pages and the card figures of a served zoo."""

    def __init__(self, served):
        self.served = served
        self.templates = Jinja2Templates(directory=os.path.join(WEB, "templates"))

    async def index(self, request):
        names = self.served.names()
        table = render_markdown(cards.zoo_text(self.served.folder)) if names else ""
        context = {"table": table, "folder": self.served.folder, "names": names}
        return self.templates.TemplateResponse(request, "index.html", context)

    async def entry(self, request):
        name = request.path_params["name"]
        card = render_markdown(explore.card_markdown(self.served.path(name)))
        return self.templates.TemplateResponse(request, "entry.html", {"name": name, "card": card})

    async def entry_redirect(self, request):
        self.served.path(request.path_params["name"])
        return RedirectResponse(f"/entries/{request.path_params['name']}/")

    async def figure(self, request):
        path = self.served.path(request.path_params["name"])
        file = request.path_params["file"]
        target = os.path.join(path, zoo.FIGURES_DIR, file)
        if not FIGURE_NAME.fullmatch(file) or not os.path.isfile(target):
            raise HTTPException(404, f"no figure '{file}'")
        return FileResponse(target, media_type="image/png")


def create_app(zoo_folder):
    """The Starlette app serving `zoo_folder`."""
    served = Zoo(zoo_folder)
    pages = Pages(served)

    async def info(request):
        return JSONResponse(served.explorer(request.path_params["name"]).info())

    def answer(schema, ask):
        async def endpoint(request):
            explorer = served.explorer(request.path_params["name"])
            body = await _body(request, schema)
            return JSONResponse(await run_in_threadpool(ask, explorer, body))  # off the event loop

        return endpoint

    api = "/api/entries/{name}"
    routes = [
        Route("/", pages.index),
        Route("/entries/{name}", pages.entry_redirect),
        Route("/entries/{name}/", pages.entry),
        Route("/entries/{name}/figures/{file}", pages.figure),
        Route(api, info),
        *(Route(f"{api}/{action}", answer(*ACTIONS[action]), methods=["POST"]) for action in ACTIONS),
        Mount("/static", StaticFiles(directory=os.path.join(WEB, "static")), name="static"),
    ]
    handlers = {HTTPException: _http_error, explore.RequestError: _request_error, Exception: _internal_error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.add_middleware(LimitBody)
    return app


async def _http_error(request, exc):
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


async def _request_error(request, exc):
    return JSONResponse({"error": str(exc)}, status_code=400)


async def _internal_error(request, exc):
    log.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return JSONResponse({"error": f"internal error ({type(exc).__name__})"}, status_code=500)


def bind(host="127.0.0.1", port=8000):
    """A listening socket on host:port (port 0: any free one); `OSError` when taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on connections of a socket that says
    # it is TCP, and without it each response waits ~40 ms for a delayed ACK (Nagle's algorithm).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def serve(app, sock):
    """Serves `app` on a bound socket until interrupted (Ctrl-C)."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
