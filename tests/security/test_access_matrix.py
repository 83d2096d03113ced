"""Who may call what: a table of EVERY URL pattern of the project (a new pattern missing from the table
fails `test_every_url_pattern_is_in_the_table`), checked for anonymous users, members, curators,
admins and a curator of another project. Also: uploaded files are served with safe headers, every
POST form carries a CSRF token and a POST without one is refused, and a token made on the token page
never reaches the database in plain text.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from portal.models import ApiToken, Label, Membership, SEMImage, TrainingRun, WebhookSubscription
from portal.services.delivery.tokens import create_token
from tests.helpers import png_bytes, token_client

pytestmark = pytest.mark.django_db

REPO_ROOT = Path(__file__).resolve().parents[2]

# --- the world every case runs in ------------------------------------------------------------------


@dataclass
class World:
    users: dict[str, object]  # role -> user (no "anonymous": that is the absence of a user)
    image: SEMImage
    model: object  # production ModelVersion v1
    candidate: object  # candidate ModelVersion v2
    run: TrainingRun
    sample: object
    project: object
    webhook: WebhookSubscription  # owned by the member
    token: ApiToken  # owned by the member
    categories: dict
    watch_folder: object  # a WatchFolder of `project`


@pytest.fixture
def world(
    project,
    sample,
    user,
    member,
    admin_user,
    make_user,
    other_project,
    make_image,
    make_model,
    predict,
    categories,
    tmp_path,
) -> World:
    from portal.models import WatchFolder

    outsider = make_user("otto-outsider", project=other_project, role=Membership.Role.CURATOR)
    sample.lims_id = "LIMS-0001"
    sample.save()
    model = make_model(1, status="production")
    image = make_image(sample, split="test", curated=categories["Fibres"])
    predict(image, model, {"Particles": 0.6, "Fibres": 0.3, "Powder": 0.1}, categories)
    run = TrainingRun.objects.create(
        trigger=TrainingRun.Trigger.MANUAL, active=None, status=TrainingRun.Status.SUCCEEDED
    )
    webhook = WebhookSubscription.objects.create(
        owner=member, url="https://lims.example.org/hook", events=["image.classified"], secret="s" * 32
    )
    return World(
        users={"member": member, "curator": user, "admin": admin_user, "outsider": outsider},
        image=image,
        model=model,
        candidate=make_model(2),
        run=run,
        sample=sample,
        project=project,
        webhook=webhook,
        token=create_token(member, "lims").token,
        categories=categories,
        watch_folder=WatchFolder.objects.create(path=str(tmp_path / "share"), project=project, uploader=user),
    )


# --- expected outcomes ------------------------------------------------------------------------------
# "ok": allowed (2xx, a redirect that is not the login page, or 409 when the state declines the
# action, e.g. a rollback without an earlier model). Every payload is valid, so a 400 is a refusal:
# the API refuses another project's sample or project as an invalid field value.

OK = "ok"
OK_STATUSES = {200, 201, 202, 204, 302, 409}
ROLES = ("member", "curator", "admin", "outsider")


def rule(member, curator, admin, outsider) -> dict[str, object]:
    return dict(zip(ROLES, (member, curator, admin, outsider)))


EVERYONE = rule(OK, OK, OK, OK)  # any signed-in user; querysets scope what they see
PROJECT = rule(OK, OK, OK, 404)  # an object of `project`: another project's user must not learn it exists
PROJECT_CURATORS = rule(403, OK, OK, 404)  # label changes on an object of `project`
CURATORS = rule(403, OK, OK, OK)  # the review queue: curators of any project (acting on their own projects)
ADMINS = rule(403, 403, OK, 403)  # training and model promotion
OWNER = rule(OK, 404, 404, 404)  # the member's own webhook and token
OWN_PROJECT_FIELD = rule(OK, OK, OK, 404)  # create in `project` / upload to `sample`: 404 "no such sample/project"


@dataclass(frozen=True)
class Route:
    methods: dict[str, dict[str, object]]
    kwargs: Callable[[World], dict] = lambda w: {}
    query: str = ""
    data: Callable[[World], dict] = lambda w: {}


_serial = itertools.count(1)


def new_png() -> SimpleUploadedFile:
    """A fresh upload per request (a file object is consumed by the request that sends it)."""
    return SimpleUploadedFile("new.png", png_bytes(next(_serial) + 1000), content_type="image/png")


IMAGE = {"kwargs": lambda w: {"pk": w.image.pk}}
LABEL_DATA = {"data": lambda w: {"category": w.categories["Powder"].pk}}

WEB_ROUTES = {
    "web:home": Route({"GET": EVERYONE}),
    "web:browse": Route({"GET": EVERYONE}),
    "web:image_detail": Route({"GET": PROJECT}, **IMAGE),
    "web:image_label": Route({"POST": PROJECT_CURATORS}, **IMAGE, **LABEL_DATA),
    "web:image_not_classifiable": Route({"POST": PROJECT_CURATORS}, **IMAGE, data=lambda w: {"value": "0"}),
    "web:image_original": Route({"GET": PROJECT}, **IMAGE),
    "web:image_thumbnail": Route({"GET": PROJECT}, **IMAGE),
    "web:image_derivative": Route({"GET": PROJECT}, **IMAGE),
    "web:image_full": Route({"GET": PROJECT}, **IMAGE),
    "web:image_preview": Route({"GET": PROJECT}, **IMAGE),
    "web:upload": Route({"GET": EVERYONE, "POST": EVERYONE}),
    "web:upload_file": Route({"POST": PROJECT}, data=lambda w: {"sample": w.sample.pk, "file": new_png()}),
    "web:upload_status": Route({"GET": EVERYONE}, query="?ids=1,2"),
    "web:review": Route({"GET": CURATORS}),
    "web:review_label": Route({"POST": PROJECT_CURATORS}, **IMAGE, **LABEL_DATA),
    "web:review_skip": Route({"POST": CURATORS}, **IMAGE),  # only remembers the id in the user's session
    "web:review_unskip": Route({"POST": CURATORS}),
    "web:review_undo": Route({"POST": CURATORS}),
    "web:review_bulk_accept": Route({"POST": CURATORS}, data=lambda w: {"min_confidence": 95}),
    "web:dashboard": Route({"GET": EVERYONE}),
    # Only the relabel a confusion cell just offered to its own author (kept in their session): none here.
    "web:relabel_undo": Route({"POST": rule(404, 404, 404, 404)}, kwargs=lambda w: {"label_id": _current_label(w)}),
    "web:confusion_cell": Route(
        {"GET": EVERYONE}, kwargs=lambda w: {"version": w.model.version}, query="?actual=Fibres&predicted=Particles"
    ),
    "web:training": Route({"GET": EVERYONE}),
    "web:training_start": Route({"POST": ADMINS}),
    "web:training_refit": Route({"POST": ADMINS}),
    "web:training_run": Route({"GET": EVERYONE}, kwargs=lambda w: {"pk": w.run.pk}),
    "web:training_progress": Route({"GET": EVERYONE}, kwargs=lambda w: {"pk": w.run.pk}),
    "web:training_cancel": Route({"POST": ADMINS}, kwargs=lambda w: {"pk": w.run.pk}),
    "web:model_promote": Route({"POST": ADMINS}, kwargs=lambda w: {"version": w.candidate.version}),
    "web:model_rollback": Route({"POST": ADMINS}),
    "web:inbox": Route({"GET": CURATORS}),
    "web:inbox_toggle": Route({"POST": PROJECT_CURATORS}, kwargs=lambda w: {"pk": w.watch_folder.pk}),
    "account:tokens": Route({"GET": EVERYONE, "POST": EVERYONE}, data=lambda w: {"name": "new"}),
    "account:token_revoke": Route({"POST": OWNER}, kwargs=lambda w: {"pk": w.token.pk}),
}

API_ROUTES = {
    "api:api-root": Route({"GET": EVERYONE}),
    "api:project-list": Route({"GET": EVERYONE}),
    "api:project-detail": Route({"GET": PROJECT}, kwargs=lambda w: {"pk": w.project.pk}),
    "api:sample-list": Route(
        {"GET": EVERYONE, "POST": OWN_PROJECT_FIELD},
        data=lambda w: {"project": w.project.pk, "lab_sample_id": f"NEW-{next(_serial)}", "name": "n"},
    ),
    "api:sample-detail": Route(
        {"GET": PROJECT, "PATCH": PROJECT, "DELETE": PROJECT_CURATORS},
        kwargs=lambda w: {"pk": w.sample.pk},
        data=lambda w: {"material": "ZnO"},
    ),
    "api:sample-by-lims": Route({"GET": PROJECT}, kwargs=lambda w: {"lims_id": w.sample.lims_id}),
    "api:image-list": Route(
        {"GET": EVERYONE, "POST": OWN_PROJECT_FIELD}, data=lambda w: {"sample": w.sample.pk, "file": new_png()}
    ),
    "api:image-detail": Route({"GET": PROJECT}, **IMAGE),
    "api:image-labels": Route(
        {"GET": PROJECT, "POST": PROJECT_CURATORS}, **IMAGE, data=lambda w: {"category": w.categories["Powder"].slug}
    ),
    "api:image-not-classifiable": Route({"POST": PROJECT_CURATORS}, **IMAGE, data=lambda w: {"value": False}),
    "api:image-original": Route({"GET": PROJECT}, **IMAGE),
    "api:image-thumbnail": Route({"GET": PROJECT}, **IMAGE),
    "api:image-predictions": Route({"GET": PROJECT}, **IMAGE),
    "api:image-similar": Route({"GET": PROJECT}, **IMAGE),
    # GET before any POST answers 409 (not requested yet: "the state declines"); POST queues it (202).
    "api:image-heatmap": Route({"GET": PROJECT, "POST": PROJECT}, **IMAGE),
    "api:category-list": Route({"GET": EVERYONE}),
    "api:category-detail": Route({"GET": EVERYONE}, kwargs=lambda w: {"slug": w.categories["Fibres"].slug}),
    "api:review-queue": Route({"GET": CURATORS}),
    "api:model-list": Route({"GET": EVERYONE}),
    "api:model-detail": Route({"GET": EVERYONE}, kwargs=lambda w: {"version": w.model.version}),
    "api:model-metrics": Route({"GET": EVERYONE}, kwargs=lambda w: {"version": w.model.version}),
    "api:model-predictions": Route({"GET": EVERYONE}, kwargs=lambda w: {"version": w.model.version}),
    "api:model-promote": Route({"POST": ADMINS}, kwargs=lambda w: {"version": w.candidate.version}),
    "api:model-rollback": Route({"POST": ADMINS}),
    "api:training-run-list": Route({"GET": EVERYONE, "POST": ADMINS}, data=lambda w: {"force": True}),
    "api:training-run-detail": Route({"GET": EVERYONE}, kwargs=lambda w: {"pk": w.run.pk}),
    "api:training-run-cancel": Route({"POST": ADMINS}, kwargs=lambda w: {"pk": w.run.pk}),
    "api:webhook-list": Route(
        {"GET": EVERYONE, "POST": EVERYONE},
        data=lambda w: {"url": "https://lims.example.org/other", "events": ["image.classified"]},
    ),
    "api:webhook-detail": Route(
        {"GET": OWNER, "PATCH": OWNER, "DELETE": OWNER},
        kwargs=lambda w: {"pk": w.webhook.pk},
        data=lambda w: {"active": False},
    ),
    "api:webhook-deliveries": Route({"GET": OWNER}, kwargs=lambda w: {"pk": w.webhook.pk}),
}

TABLE = {**WEB_ROUTES, **API_ROUTES}

# Patterns outside the table, each with the reason it needs no role check here.
EXEMPT = {
    "login": "the sign-in page must be reachable signed out (tests/web/test_access.py covers it)",
    "logout": "signing out needs no role; it is a POST protected by CSRF (tested below)",
    "favicon.ico": "a permanent redirect to a static file; no data",
    "api:schema": "the public OpenAPI description of the API: no data",
    "api:docs": "Swagger UI over the public schema: no data",
    "api:redoc": "ReDoc over the public schema: no data",
    r"api/^[\s\S]*$": "catch-all that answers a JSON 404 for unknown endpoints (line breaks included)",
}
# Django's admin has its own staff-only login (tests/api/test_admin.py); static files are served by
# WhiteNoise middleware, not by URL patterns.
EXEMPT_NAMESPACES = {"admin": "Django admin: is_staff login of its own"}


def url_pattern_keys(patterns=None, prefix: str = "", namespace: str = "") -> set[str]:
    """Every URL pattern of the project by its namespaced name (or its route when unnamed)."""
    keys: set[str] = set()
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace in EXEMPT_NAMESPACES:
                continue
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            keys |= url_pattern_keys(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            keys.add(f"{namespace}{pattern.name}" if pattern.name else prefix + str(pattern.pattern))
    return keys


def test_every_url_pattern_is_in_the_table():
    found = url_pattern_keys()
    assert found - TABLE.keys() - EXEMPT.keys() == set(), "new URL patterns: add them to the access table"
    assert (TABLE.keys() | EXEMPT.keys()) - found == set(), "the table names URL patterns that no longer exist"


# --- running one case -------------------------------------------------------------------------------


def client_for(role: str, world: World, api: bool):
    if role == "anonymous":
        return APIClient() if api else Client()
    if api:
        return token_client(world.users[role])
    client = Client()
    client.force_login(world.users[role])
    return client


def outcome(response) -> object:
    status = response.status_code
    release(response)
    if status == 302 and response["Location"].startswith(reverse("login") + "?next="):
        return "login"
    return OK if status in OK_STATUSES else status


def release(response) -> None:
    # A FileResponse holds the stored file open. (Not response.close(): that sends request_finished,
    # which would close the test's database connection.)
    if getattr(response, "file_to_stream", None) is not None:
        response.file_to_stream.close()


def call(client, method: str, url: str, data: dict, api: bool):
    send = getattr(client, method.lower())
    if method == "GET":
        return send(url)
    if not api:
        return send(url, data)
    has_file = any(isinstance(value, SimpleUploadedFile) for value in data.values())
    return send(url, data, format="multipart" if has_file else "json")


FETCH_ROUTES = {"web:upload_file", "web:upload_status", "web:training_progress"}

CASES = [pytest.param(name, method, id=f"{name}-{method}") for name, route in TABLE.items() for method in route.methods]


@pytest.mark.parametrize(("name", "method"), CASES)
def test_access(name, method, world):
    route = TABLE[name]
    api = name.startswith("api:")
    url = reverse(name, kwargs=route.kwargs(world)) + route.query
    # The endpoints that page scripts fetch answer 401 JSON signed out, like the API (issue 14).
    expected = {"anonymous": 401 if api or name in FETCH_ROUTES else "login", **route.methods[method]}
    actual = {}
    # The outsider goes first: a refusal must not depend on what allowed roles did before.
    for role in ("anonymous", "outsider", "member", "curator", "admin"):
        actual[role] = outcome(call(client_for(role, world, api), method, url, route.data(world), api))
    assert actual == expected


def test_anonymous_api_refusal_uses_the_error_body(world):
    body = APIClient().get(reverse("api:image-detail", kwargs={"pk": world.image.pk})).json()
    assert body["error"]["code"] == "not_authenticated"


# --- files are served with safe headers -------------------------------------------------------------

SAFE_TYPES = {"image/png", "image/jpeg", "image/tiff", "image/bmp", "application/octet-stream"}
FILE_URLS = [
    ("web:image_original", True),
    ("web:image_thumbnail", False),
    ("web:image_derivative", False),
    ("web:image_full", False),
    ("web:image_preview", False),
    ("api:image-original", True),
    ("api:image-thumbnail", False),
]


def fetch_file(world: World, name: str):
    client = client_for("member", world, api=name.startswith("api:"))
    response = client.get(reverse(name, kwargs={"pk": world.image.pk}))
    body = b"".join(response.streaming_content)
    release(response)
    return response, body


@pytest.mark.parametrize(("name", "is_original"), FILE_URLS, ids=[name for name, _ in FILE_URLS])
def test_files_are_served_with_safe_headers(name, is_original, world):
    response, body = fetch_file(world, name)
    assert response.status_code == 200 and body
    assert response["Content-Type"] in SAFE_TYPES
    assert response["X-Content-Type-Options"] == "nosniff"
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment;" if is_original else "inline;"), disposition
    assert "private" in response["Cache-Control"]


@pytest.mark.parametrize(
    "name", ["web:image_original", "api:image-original", "web:image_thumbnail", "api:image-thumbnail"]
)
def test_markup_is_never_served_as_markup(name, world):
    """Even if a row said SVG and a stored file ended in .html (a tampered row, a future format),
    the browser gets an opaque download, never a document it would render."""
    image = world.image
    image.thumbnail.save(
        f"{image.sha256[:2]}/{image.sha256}.html", ContentFile(b"<script>alert(1)</script>"), save=False
    )
    SEMImage.objects.filter(pk=image.pk).update(
        format="SVG", thumbnail=image.thumbnail.name, original_filename="drawing.svg"
    )
    response, _ = fetch_file(world, name)
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("name", ["web:image_original", "api:image-original"])
def test_hostile_stored_names_cannot_break_out_of_content_disposition(name, world):
    SEMImage.objects.filter(pk=world.image.pk).update(original_filename='x"; filename="evil.html')
    response, _ = fetch_file(world, name)
    assert response["Content-Disposition"] == r'attachment; filename="x\"; filename=\"evil.html"'


# --- CSRF -----------------------------------------------------------------------------------------------


class PostForms(HTMLParser):
    """Collects (action, has csrfmiddlewaretoken) of every <form method="post">."""

    def __init__(self):
        super().__init__()
        self.forms: list[list] = []
        self._open: list | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self._open = [attrs.get("action") or "", False] if (attrs.get("method") or "").lower() == "post" else None
            if self._open is not None:
                self.forms.append(self._open)
        elif tag == "input" and self._open is not None and attrs.get("name") == "csrfmiddlewaretoken":
            self._open[1] = bool(attrs.get("value"))

    def handle_endtag(self, tag):
        if tag == "form":
            self._open = None


def post_forms(html: str) -> list[list]:
    parser = PostForms()
    parser.feed(html)
    return parser.forms


def template_post_form_targets() -> set[str]:
    """URL names of every POST form in templates/ (a form without action posts to its own page)."""
    targets = set()
    for template in (REPO_ROOT / "templates").rglob("*.html"):
        for form in re.findall(r"<form[^>]*method=\"post\"[^>]*>", template.read_text()):
            found = re.search(r"\{% url '([^']+)'", form)
            targets.add(found.group(1) if found else f"self:{template.relative_to(REPO_ROOT / 'templates')}")
    return targets


def skip_the_image(client, world: World) -> None:
    client.post(reverse("web:review_skip", args=[world.image.pk]))  # the page then offers "Bring back skipped"


def queue_a_run(client, world: World) -> None:
    """The training page then shows the run's progress with its Cancel form."""
    TrainingRun.objects.get_or_create(active=True, defaults={"trigger": TrainingRun.Trigger.MANUAL})


def relabel_from_the_cell(client, world: World) -> None:
    """The confusion cell page then offers to undo the relabel."""
    data = {"category": world.categories["Powder"].pk, "from": "confusion_cell"}
    client.post(reverse("web:image_label", args=[world.image.pk]), data)


def rendered_pages(world: World) -> list[tuple]:
    """(role, url[, prepare]) of pages that together show every POST form of the templates."""
    image, model = world.image, world.model
    return [
        ("anonymous", reverse("login")),
        ("member", reverse("account:tokens")),  # lists the member's token with its revoke form
        ("member", reverse("web:upload")),
        ("admin", reverse("web:training")),
        ("admin", reverse("web:training"), queue_a_run),
        ("curator", reverse("web:image_detail", args=[image.pk])),
        ("curator", reverse("web:review")),
        ("curator", reverse("web:review"), skip_the_image),
        ("curator", reverse("web:confusion_cell", args=[model.version]) + "?actual=Fibres&predicted=Particles"),
        (
            "curator",
            reverse("web:confusion_cell", args=[model.version]) + "?actual=Powder&predicted=Particles",
            relabel_from_the_cell,
        ),
        ("curator", reverse("web:browse")),
        ("curator", reverse("web:dashboard")),
        ("curator", reverse("web:inbox")),  # the watch folder's pause form
    ]


SELF_POSTING_TEMPLATES = {"self:account/tokens.html": "account:tokens"}


def test_every_post_form_carries_a_csrf_token(world):
    seen_targets, missing = set(), []
    for role, url, *prepare in rendered_pages(world):
        client = client_for(role, world, api=False)
        for step in prepare:
            step(client, world)
        page = client.get(url)
        assert page.status_code == 200, url
        for action, has_token in post_forms(page.content.decode()):
            target = action.split("?")[0] or url.split("?")[0]
            seen_targets.add(target)
            if not has_token:
                missing.append((url, action))
    assert missing == []
    expected = {
        reverse(SELF_POSTING_TEMPLATES.get(name, name), kwargs=_kwargs_for(name, world))
        for name in template_post_form_targets()
    }
    assert expected - seen_targets == set(), "some POST forms of the templates were never rendered here"


def _current_label(world: World) -> int:
    return Label.objects.get(image=world.image, is_current=True).pk


def _kwargs_for(name: str, world: World) -> dict:
    return {
        "web:relabel_undo": {"label_id": _current_label(world)},
        "web:image_label": {"pk": world.image.pk},
        "web:image_not_classifiable": {"pk": world.image.pk},
        "web:review_label": {"pk": world.image.pk},
        "web:review_skip": {"pk": world.image.pk},
        "web:model_promote": {"version": world.candidate.version},
        "account:token_revoke": {"pk": world.token.pk},
        "web:inbox_toggle": {"pk": world.watch_folder.pk},
        "web:training_cancel": {"pk": TrainingRun.objects.filter(active=True).values_list("pk", flat=True).first()},
    }.get(name, {})


@pytest.mark.parametrize(
    ("url_name", "kwargs", "data"),
    [
        ("web:image_label", "image", "category"),
        ("web:upload_file", None, "sample"),
        ("web:review_bulk_accept", None, "threshold"),
        ("account:tokens", None, "token_name"),
        ("logout", None, None),
    ],
)
def test_post_without_csrf_token_is_refused(url_name, kwargs, data, world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["curator"])
    payload = {
        "category": {"category": world.categories["Powder"].pk},
        "sample": {"sample": world.sample.pk},
        "threshold": {"min_confidence": 50},
        "token_name": {"name": "csrf"},
    }.get(data, {})
    url = reverse(url_name, kwargs={"pk": world.image.pk} if kwargs else None)
    labels, tokens = Label.objects.count(), ApiToken.objects.count()
    assert client.post(url, payload).status_code == 403
    assert (Label.objects.count(), ApiToken.objects.count()) == (labels, tokens)
    assert client.get(reverse("web:browse")).status_code == 200  # still signed in: logout was refused too


def test_post_with_the_csrf_token_is_accepted(world):
    """The refusal above is CSRF, not something else: the same request with the token works."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["curator"])
    client.get(reverse("web:image_detail", args=[world.image.pk]))  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    response = client.post(
        reverse("web:image_label", args=[world.image.pk]),
        {"category": world.categories["Powder"].pk, "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302
    assert Label.objects.get(image=world.image, is_current=True).category == world.categories["Powder"]


def test_api_with_a_session_but_without_csrf_token_is_refused(world):
    """Session authentication on the API (the browsable API) must not open a CSRF hole."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(world.users["curator"])
    response = client.post(
        reverse("api:image-labels", kwargs={"pk": world.image.pk}),
        {"category": world.categories["Powder"].slug},
        format="json",
    )
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]


# --- tokens --------------------------------------------------------------------------------------------


def test_token_made_on_the_token_page_is_stored_only_hashed(world):
    """Through the real page: the secret is shown once and is in no table (tokens, sessions, messages)."""
    client = client_for("member", world, api=False)
    # Post/redirect/get (issue 14): the page after the redirect shows the secret.
    page = client.post(reverse("account:tokens"), {"name": "LIMS production"}, follow=True).content.decode()
    secret = re.search(r"sem_[A-Za-z0-9_\-]{20,}", page).group(0)
    with connection.cursor() as cursor:
        for table in ("portal_apitoken", "django_session"):
            cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 (fixed table names)
            stored = " ".join(str(value) for row in cursor.fetchall() for value in row)
            assert secret not in stored and secret[4:] not in stored, table
    assert secret not in client.get(reverse("account:tokens")).content.decode()  # shown once only
    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {secret}").get(reverse("api:project-list")).status_code == 200
