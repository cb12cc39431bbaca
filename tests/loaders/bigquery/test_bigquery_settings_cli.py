"""`elt run` on a BigQuery project whose settings are wrong: one line naming the setting and the fix, exit 2
(configuration), no traceback and nothing of a key file. No emulator: each fails before any request."""

from __future__ import annotations

import pytest

from tests.fixtures.projects import run_elt, write_project

PROJECT = """
from elt import Pipeline, extractor

items = extractor(lambda since: [{"n": 1}], name="items", primary_key="n", cursor="n")
Pipeline("shop", streams=[items])
"""

SECRET = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC-not-a-real-key"


@pytest.fixture
def project(tmp_path):
    return write_project(tmp_path / "proj", PROJECT)


def elt_run(project, tmp_path, **env: str):
    # No credentials of the machine's user, and google-auth's metadata-server probe kept on 127.0.0.1.
    base = {"ELT_DESTINATION": "bigquery", "ELT_BIGQUERY_PROJECT": "p", "HOME": str(tmp_path),
            "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"), "GOOGLE_APPLICATION_CREDENTIALS": "",
            "NO_GCE_CHECK": "True", "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"}
    result = run_elt(["run"], cwd=project, database_url=None, timeout=120, **{**base, **env})
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output and "╭" not in output, output[-3000:]
    assert result.stderr.count("error:") == 1, result.stderr[-3000:]
    # The console wraps the message at its width: the line is the text from "error:" on, unwrapped.
    return " ".join(result.stderr[result.stderr.index("error:"):].split()), output


@pytest.mark.parametrize("prefix", ["my-prefix-", "dots.are.out_", "x" * 1020])
def test_an_invalid_dataset_prefix_is_one_line_naming_the_variable_and_the_rule(project, tmp_path, prefix):
    line, _ = elt_run(project, tmp_path, ELT_BIGQUERY_DATASET_PREFIX=prefix, ELT_BIGQUERY_ENDPOINT="http://127.0.0.1:9")
    assert line.startswith("error: ELT_BIGQUERY_DATASET_PREFIX"), line
    assert len(line) < 400, line
    assert "letters, digits and underscores only" in line and "at most 1016 characters" in line


@pytest.mark.parametrize(("content", "problem"), [
    ('{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\n' + SECRET + '\\n-----END PRIVATE KEY-----\\n"}',
     "a service account key missing client_email, token_uri"),
    ('{"type": "service_account", "client_email": "a@p.iam.gserviceaccount.com", "token_uri":'
     ' "https://oauth2.googleapis.com/token", "private_key": "-----BEGIN PRIVATE KEY-----\\n' + SECRET
     + '\\n-----END PRIVATE KEY-----\\n"}', "private_key cannot be read"),
    (SECRET + " not json", "is not valid JSON"),
    (None, "no such file"),
])
def test_a_malformed_key_file_is_one_line_naming_the_variable_without_the_key(project, tmp_path, content, problem):
    key = tmp_path / "key.json"
    if content is not None:
        key.write_text(content, encoding="utf-8")
    line, output = elt_run(project, tmp_path, GOOGLE_APPLICATION_CREDENTIALS=str(key))
    assert line.startswith(f"error: GOOGLE_APPLICATION_CREDENTIALS={key}: "), line
    assert problem in line, line
    assert SECRET not in output and "PRIVATE KEY" not in output


def test_no_credentials_and_no_endpoint_says_how_to_provide_them(project, tmp_path):
    line, _ = elt_run(project, tmp_path)
    assert "found no Google Cloud credentials" in line
    for way in ("GOOGLE_APPLICATION_CREDENTIALS", "gcloud auth application-default login", "ELT_BIGQUERY_ENDPOINT"):
        assert way in line
