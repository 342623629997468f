"""End to end with the real packaged all-MiniLM-L6-v2: paraphrased questions find the right article."""

import hashlib
import json

import pytest
from click.testing import CliRunner

from kbindex.cli import cli
from kbindex.embedding import packaged_model_path
from tests.conftest import SAMPLE_KB

pytestmark = pytest.mark.model

PACKAGED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def test_packaged_model_is_the_official_weights():
    data = (packaged_model_path() / "model.safetensors").read_bytes()
    assert hashlib.sha256(data).hexdigest() == PACKAGED_SHA256


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    db = tmp_path_factory.mktemp("e2e") / "index"
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, [*args, "--db", str(db), "--device", "cpu"], catch_exceptions=False)

    out = run("index", str(SAMPLE_KB), "--json")
    assert out.exit_code == 0, out.output
    return run


@pytest.mark.parametrize("question,expected", [
    ("my desktop chat app won't open for people who have roaming profiles",
     "electron-app-roaming-profiles.html"),
    ("do the random starting vectors remain after a model has been trained?",
     "how-text-becomes-embeddings.md"),
    ("container won't start because the managed identity client id isn't attached to it",
     "container-app-managed-identity-not-assigned.html"),
    ("which tool tells me how employees actually experience their laptops, compared with patching agents?",
     "rmm-vs-dex-tools.html"),
    ("got a new phone and need to set up two-factor sign-in again",
     "reset-mfa-authenticator-new-phone.md"),
    ("the database server's disk keeps filling with write-ahead log segments",
     "postgresql-wal-disk-full.md"),
])
def test_paraphrased_question_finds_the_right_article_first(indexed, question, expected):
    out = indexed("query", question, "-k", "3", "--json")  # default mode: hybrid
    hits = json.loads(out.stdout)["hits"]
    assert hits[0]["source"].endswith(expected), [h["source"] for h in hits]
    vector = json.loads(indexed("query", question, "-k", "1", "--mode", "vector", "--json").stdout)["hits"]
    assert vector[0]["source"].endswith(expected) and vector[0]["score"] > 0.3


@pytest.mark.parametrize("query,expected", [
    ("0x80070002", "windows-update-error-0x80070002.rst"),
    ("AZURE_CLIENT_ID", "container-app-managed-identity-not-assigned.html"),
    ("max_wal_size", "postgresql-wal-disk-full.md"),
])
def test_exact_identifier_finds_the_article_that_contains_it(indexed, query, expected):
    hits = json.loads(indexed("query", query, "-k", "3", "--json").stdout)["hits"]
    assert hits[0]["source"].endswith(expected), [h["source"] for h in hits]
    assert hits[0]["keyword_rank"] is not None  # the keyword index found it


def test_reindexing_is_stable(indexed):
    before = json.loads(indexed("stats", "--json").stdout)["chunks"]
    again = json.loads(indexed("index", str(SAMPLE_KB), "--json").stdout)
    assert again["chunks_added"] == 0
    assert json.loads(indexed("stats", "--json").stdout)["chunks"] == before
