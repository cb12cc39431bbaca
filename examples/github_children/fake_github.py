"""A local stand-in for GitHub's REST API, so this example runs without a token or a network.

``GET /orgs/{org}/repos`` and ``GET /repositories/{id}/issues`` page with
``per_page``/``page`` and an RFC 5988 ``Link`` header, like api.github.com;
issues take ``since`` (ISO 8601, on ``updated_at``) and come back oldest
update first when asked with ``sort=updated&direction=asc``.
"""

from __future__ import annotations

import datetime as dt
import random
import urllib.parse

from elt.testing import FakeApi, Reply

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
REPOS = [{"id": 1000 + n, "name": f"service-{n}", "full_name": f"acme/service-{n}", "private": n % 3 == 0,
          "language": random.Random(n).choice(["Python", "Go", "TypeScript"])} for n in range(1, 8)]


def _issues(repo_id: int) -> list[dict]:
    rng = random.Random(repo_id)
    rows = []
    for number in range(1, rng.randint(20, 80)):
        updated = START + dt.timedelta(hours=rng.randint(0, 24 * 300))
        rows.append({"id": repo_id * 10_000 + number, "number": number, "title": f"Issue {number}",
                     "state": rng.choice(["open", "closed"]), "updated_at": updated.isoformat().replace("+00:00", "Z"),
                     "labels": [{"name": rng.choice(["bug", "feature", "chore"])}]})
    return sorted(rows, key=lambda r: (r["updated_at"], r["id"]))


def _page(api: FakeApi, request, rows: list[dict]) -> Reply:
    per_page = min(int(request.params.get("per_page", 30)), 100)
    page = int(request.params.get("page", 1))
    last = max(1, -(-len(rows) // per_page))
    links = []

    def link(number: int, rel: str) -> str:
        query = urllib.parse.urlencode({**request.params, "page": number})
        return f'<{api.url}{request.path}?{query}>; rel="{rel}"'

    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    return Reply(rows[(page - 1) * per_page: page * per_page], headers={"Link": ", ".join(links)} if links else {})


def start() -> FakeApi:
    api = FakeApi()

    @api.route("/orgs/{org}/repos")
    def repos(request):
        return _page(api, request, REPOS)

    @api.route("/repositories/{repo_id}/issues")
    def issues(request):
        rows = _issues(int(request.path_params["repo_id"]))
        since = request.params.get("since")
        if since:
            rows = [r for r in rows if r["updated_at"] >= since]
        return _page(api, request, rows)

    return api.start()
