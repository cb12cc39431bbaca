"""GitHub-style API with a child stream: every repository of an organisation, then each one's issues.

Run it (the fake API starts by itself, on 127.0.0.1 only):

    elt --project examples/github_children run

Against the real GitHub, delete the lines marked "fake", set ``GITHUB_TOKEN``
in ``.env`` and ``base_url = "https://api.github.com"``.
"""

import datetime as dt
import os

import fake_github  # fake: the bundled stand-in for api.github.com

from elt import BearerAuth, Cursor, LinkHeaderPaginator, Pipeline, RateLimit, RestExtractor, from_env

API = fake_github.start()  # fake
os.environ.setdefault("GITHUB_TOKEN", "ghp_local_example_token")  # fake: a real token goes in .env

# 5,000 requests/hour for a token: about 1.4/s, shared by both streams.
GITHUB_LIMIT = RateLimit(per_minute=80, burst=10)


class GitHub(RestExtractor):
    base_url = API.url
    auth = BearerAuth(from_env("GITHUB_TOKEN"))
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
    paginator = LinkHeaderPaginator()
    rate_limit = GITHUB_LIMIT
    primary_key = "id"


class Repos(GitHub):
    name = "repos"
    path = "/orgs/acme/repos"
    params = {"per_page": 100}


class Issues(GitHub):
    """Issues of every repository; `since` asks only for issues updated after the last run."""

    name = "issues"
    path = "/repositories/{id}/issues"
    parent = Repos
    parent_fields = {"repository_id": "id"}
    params = {"per_page": 100, "state": "all", "sort": "updated", "direction": "asc"}
    cursor = Cursor("updated_at", param="since", lookback=dt.timedelta(minutes=5))
    write_strategy = "append_dedup"

    def format_cursor(self, since: dt.datetime) -> str:
        # GitHub wants ISO 8601 in UTC with a Z.
        return since.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Pipeline("github", streams=[Repos(), Issues()], description="Repositories and their issues, GitHub style")
