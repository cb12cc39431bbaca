"""Passwords never reach a message, whatever the connection string's form."""

from __future__ import annotations

import pytest

from elt import secrets
from tests.fixtures.projects import run_elt, write_project

PASSWORD = "Tr0ub4dor&3@x/y"


@pytest.mark.parametrize(
    "conninfo",
    [
        "postgresql://app:Tr0ub4dor%263%40x%2Fy@db.example:5432/shop",
        "postgresql://app:Tr0ub4dor&3@x/y@db.example:5432/shop",  # unencoded @ and / in the password
        "postgresql://app@db.example/shop?password=Tr0ub4dor%263%40x%2Fy&sslmode=require",
        "host=db.example user=app password=Tr0ub4dor&3@x/y dbname=shop",
        "host=db.example user=app password='Tr0ub4dor&3@x/y' dbname=shop",
    ],
    ids=["url-encoded", "url-raw", "query-param", "keywords", "keywords-quoted"],
)
def test_every_form_of_a_connection_password_is_masked(conninfo):
    # Unregistered: the patterns alone must mask it where it stands in the text.
    text = secrets.redact(f"cannot connect to {conninfo}: timeout")
    for form in (PASSWORD, "Tr0ub4dor%263%40x%2Fy", "Tr0ub4dor", "4dor"):
        assert form not in text, text
    assert "db.example" in text  # the rest of the message still helps
    # Registered (as elt does for every database it opens): a decoded or encoded echo is masked too.
    secrets.register_connection(conninfo)
    assert "Tr0ub4dor" not in secrets.redact(f"server said: password {PASSWORD} rejected")
    assert "Tr0ub4dor" not in secrets.redact("server said: Tr0ub4dor%263%40x%2Fy rejected")


def test_a_wrong_destination_url_fails_without_showing_its_password(tmp_path):
    project = write_project(tmp_path / "p", """
        from elt import Pipeline, extractor

        @extractor()
        def items():
            yield {"id": 1}

        Pipeline("shop", streams=[items])
    """)
    url = "postgresql://app@127.0.0.1:1/shop?password=Sup3rS3cretValue&connect_timeout=2"
    result = run_elt(["run"], cwd=project, database_url=url)
    assert result.returncode != 0
    assert "cannot connect" in result.stderr + result.stdout
    assert "Sup3rS3cretValue" not in result.stderr + result.stdout


def test_the_tail_of_a_password_libpq_reads_as_the_host_is_masked():
    # libpq ends a URL's password at its first unencoded "@" and prints the rest as the host it
    # could not resolve: that tail is the password too.
    secrets.register_connection("postgresql://loader:Wr@ngPw-Secret-888@127.0.0.1:5432/analytics")
    text = secrets.redact("could not translate host name \"ngPw-Secret-888@127.0.0.1\" to address")
    assert "ngPw-Secret-888" not in text and "127.0.0.1" in text, text
