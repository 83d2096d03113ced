"""The review page's queue: the order comes from `portal.services.curation.review` (shared with the REST API);
this module keeps the per-session skip and undo lists of the web UI.
"""

from __future__ import annotations

from django.db.models import F

from portal.services.curation.review import (  # noqa: F401  (the web views' names for the service)
    CHECKED_SOURCES,
    DISPUTED,
    UNLABELLED,
    bulk_candidates,
    confident_in,
    curatable,
    disputed,
    disputed_in,
    remaining,
    remaining_by_project,
    suggestions,
    unlabelled,
    unlabelled_in,
)
from portal.services.curation.review import next_image as _next_image
from portal.services.curation.review_order import DEFAULT_ORDER, parse_order

SKIPPED_KEY = "review_skipped"
UNDO_KEY = "review_undo"
MAX_REMEMBERED = 500  # bounded session size: older skips and undo steps are forgotten
RELATED = ("sample__project", "predicted_category", "curated_category", "predicted_by")


def next_image(
    user,
    skipped: list[int],
    project_id: int | None = None,
    reason: str | None = None,
    order: str = DEFAULT_ORDER,
    compute: bool = True,
):
    """The head of the queue and which part of it ("unlabelled" or "disputed") it came from; ``compute``
    False: a preview (the page's preloaded next image) that never computes a teaching batch."""
    return _next_image(
        user, skipped, project_id=project_id, reason=reason, related=RELATED, order=order, compute=compute
    )


def queue_filter(user, params) -> dict:
    """{"project_id", "reason", "order"} from the page's query string; a project the user does not curate,
    or an unknown reason, filters nothing; an unknown order is the default one."""
    from portal.permissions import curated_projects
    from portal.web.access import parse_id

    project_id = parse_id(params.get("project"))  # ASCII digits only: "1²" passes str.isdigit()
    if project_id is not None and not curated_projects(user).filter(pk=project_id).exists():
        project_id = None
    reason = params.get("reason")
    return {
        "project_id": project_id,
        "reason": reason if reason in (UNLABELLED, DISPUTED) else None,
        "order": parse_order(params.get("order")),
    }


def filter_query(chosen: dict) -> str:
    """The query string that keeps the filters across the page's actions ("" without filters)."""
    from django.utils.http import urlencode

    order = chosen.get("order")
    params = {
        "project": chosen["project_id"],
        "reason": chosen["reason"],
        "order": order if order != DEFAULT_ORDER else None,
    }
    kept = {name: value for name, value in params.items() if value}
    return "?" + urlencode(kept) if kept else ""


def bulk_counts(user, project_id: int | None = None) -> dict[int, int]:
    """{whole percent: unlabelled predictions with a confidence in [p, p+1) %} from 50 % up, so that the
    page can say how many images bulk acceptance will label at any threshold before it does."""
    from django.db.models import Count, Value
    from django.db.models.functions import Floor

    rows = (
        confident_in(unlabelled(user, project_id))
        .filter(predicted_category__isnull=False, predicted_confidence__gte=0.5)
        # + 1e-9: 0.95 * 100 is 94.999... in floating point, but 0.95 passes the ≥ 95 % filter
        .annotate(percent=Floor(F("predicted_confidence") * 100 + Value(1e-9)))
        .values("percent")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {int(row["percent"]): row["n"] for row in rows}


# --- per-session state -------------------------------------------------------------------------


def skipped_ids(session) -> list[int]:
    return session.get(SKIPPED_KEY, [])


def remember_skip(session, image_id: int) -> None:
    session[SKIPPED_KEY] = (skipped_ids(session) + [image_id])[-MAX_REMEMBERED:]


def forget_skips(session) -> None:
    session.pop(SKIPPED_KEY, None)


def push_undo(session, label_ids: list[int]) -> None:
    """One undo step: the labels one action created (a single key press, or a bulk acceptance)."""
    _push_step(session, label_ids)


def push_skip_undo(session, image_id: int) -> None:
    """A skip is an action too: U right after S brings the skipped image back."""
    _push_step(session, {"skip": image_id})


def _push_step(session, step) -> None:
    steps = session.get(UNDO_KEY, [])
    session[UNDO_KEY] = (steps + [step])[-50:]


def pop_undo(session) -> list[int] | dict | None:
    """The last step: a list of label ids, or {"skip": image id}."""
    steps = session.get(UNDO_KEY, [])
    if not steps:
        return None
    session[UNDO_KEY] = steps[:-1]
    return steps[-1]


def forget_skip(session, image_id: int) -> None:
    """Undo one skip: the image's latest entry leaves the skipped list."""
    skipped = list(skipped_ids(session))
    if image_id in skipped:
        skipped.reverse()
        skipped.remove(image_id)
        skipped.reverse()
        session[SKIPPED_KEY] = skipped


def undo_depth(session) -> int:
    return len(session.get(UNDO_KEY, []))
