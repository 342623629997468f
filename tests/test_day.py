"""Day-to-day use: config file, export/import, collections, output formats, help text."""

import csv
import io
import json

import click
import pytest

from kbindex.cli import cli
from tests.conftest import SAMPLE_KB


def test_config_defaults_rank_below_env_and_options(kb, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KBINDEX_DB")
    (tmp_path / "kbindex.toml").write_text('[defaults]\ndb = "from-config"\ncollection = "cfg-coll"\n')
    kb("index", str(SAMPLE_KB / "printer-offline-windows.html"))
    assert kb.json("stats")["store"] == str(tmp_path / "from-config")
    assert kb.json("stats")["collection"] == "cfg-coll"
    monkeypatch.setenv("KBINDEX_DB", str(tmp_path / "from-env"))
    kb("index", str(SAMPLE_KB / "printer-offline-windows.html"))
    assert kb.json("stats")["store"] == str(tmp_path / "from-env")
    out = kb("stats", "--db", str(tmp_path / "from-config"), "--json")
    assert json.loads(out.stdout)["store"] == str(tmp_path / "from-config")


@pytest.mark.parametrize("text,expected", [
    ('[defaults]\ndb = 3\n', "kbindex.toml:2: defaults.db: must be a string, got 3"),
    ('[defaults]\nmodle = "x"\n', "kbindex.toml:2: defaults.modle: unknown key"),
    ('[collections.kb]\nsources = ["a"]\n\n[[collections.kb.sources]]\n', "invalid TOML"),
    ('[collections.helpdesk]\nsources = [{ path = "a", deph = 3 }]\n',
     "kbindex.toml:2: collections.helpdesk.sources[0].deph: unknown key"),
    ('[collections.x]\nmodel = "m"\n', "collections.x: invalid collection name"),
    ('[defaults]\ndb = "ok"\n[extra]\n', "kbindex.toml:3: extra: unknown section"),
    ('[collections.helpdesk]\ndepth = "deep"\n', "kbindex.toml:2: collections.helpdesk.depth: must be a integer"),
])
def test_invalid_config_names_file_line_and_key(kb, tmp_path, monkeypatch, text, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kbindex.toml").write_text(text)
    out = kb("stats")
    assert out.exit_code == 2
    assert expected in out.stderr, out.stderr
    assert "Traceback" not in out.output


def test_config_given_explicitly_must_exist(kb):
    out = kb("--config", "/no/such.toml", "stats")
    assert out.exit_code == 2 and "config file not found: /no/such.toml" in out.stderr


def test_example_config_is_valid():
    from kbindex.indexing.project import load_config
    from tests.conftest import ROOT

    config = load_config(ROOT / "data" / "kbindex.example.toml")
    assert config.collections and all(c.sources for c in config.collections.values())


@pytest.mark.parametrize("with_vectors", [True, False])
def test_export_then_import_into_another_store(kb, tmp_path, with_vectors):
    kb("index", str(SAMPLE_KB))
    before = kb.json("stats")
    dump = tmp_path / "dump.jsonl"
    args = ["export", "-o", str(dump)] + (["--with-vectors"] if with_vectors else [])
    assert kb(*args).exit_code == 0
    lines = dump.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["model"] == "fake:hash" and header["chunks"] == before["chunks"] == len(lines) - 1
    row = json.loads(lines[1])
    assert set(row) >= {"id", "text", "metadata"} and ("embedding" in row) == with_vectors
    other = tmp_path / "other"
    out = kb("import", str(dump), "--db", str(other), "--collection", "copy-kb", "--json")
    result = json.loads(out.stdout)
    assert result["chunks"] == before["chunks"]
    assert result["embedded"] == (0 if with_vectors else before["chunks"])
    after = json.loads(kb("stats", "--db", str(other), "--collection", "copy-kb", "--json").stdout)
    assert after["chunks"] == before["chunks"] and after["documents"] == before["documents"]
    q = "printer spooler offline"
    original = json.loads(kb("query", q, "--json").stdout)["hits"]
    copied = json.loads(kb("query", q, "--db", str(other), "--collection", "copy-kb", "--json").stdout)["hits"]
    assert [h["id"] for h in copied] == [h["id"] for h in original]
    verify = kb("verify", "--db", str(other), "--collection", "copy-kb")
    assert verify.exit_code == 0, verify.output  # the ledger records what was imported


def test_import_refuses_a_file_that_is_not_an_export(kb, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"hello": 1}\n')
    out = kb("import", str(bad))
    assert out.exit_code == 1 and "not a kbindex export" in out.stderr


def test_collections_list_and_delete_with_confirmation(kb):
    kb("index", str(SAMPLE_KB / "printer-offline-windows.html"))
    kb("index", str(SAMPLE_KB / "postgresql-wal-disk-full.md"), "--collection", "second-kb")
    rows = json.loads(kb("collections", "--json").stdout)
    assert {r["collection"] for r in rows} == {"kbindex", "second-kb"}
    assert all(r["model"] == "fake:hash" and r["documents"] == 1 and r["last_indexed"] for r in rows)
    refused = kb("collections", "delete", "second-kb", input="n\n")
    assert refused.exit_code == 1
    assert len(json.loads(kb("collections", "--json").stdout)) == 2
    assert kb("collections", "delete", "second-kb", input="y\n").exit_code == 0
    assert kb("collections", "delete", "kbindex", "--yes").exit_code == 0
    assert json.loads(kb("collections", "--json").stdout) == []
    out = kb("collections", "delete", "nope-kb", "--yes")
    assert out.exit_code == 1 and "no collection 'nope-kb'" in out.stderr


def test_query_formats(kb):
    kb("index", str(SAMPLE_KB))
    q = "printer offline"
    rows = list(csv.DictReader(io.StringIO(kb("query", q, "--format", "csv").stdout)))
    assert len(rows) == 5 and rows[0]["rank"] == "1" and rows[0]["query"] == q
    doc = json.loads(kb("query", q, "--format", "json").stdout)
    assert doc[0]["query"] == q and len(doc[0]["hits"]) == 5
    assert doc[0]["hits"][0]["url"].startswith(("file://", "http"))
    table = kb("query", q).stdout
    assert "\033[" not in table  # not a terminal: no colour, no escape codes
    assert " 1. " in table and "file://" in table


def test_highlight_and_color_rules(monkeypatch):
    from kbindex.output import highlight, use_color

    assert use_color(True)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(True)
    assert not use_color(False) and highlight("the spooler", ["spooler"], False) == "the spooler"
    assert "\033[" in highlight("the Spooler service", ["spooler"], True)


def _walk(command, path=()):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _walk(sub, path + (name,))


def test_every_command_and_option_has_help_with_an_example():
    for path, command in _walk(cli):
        name = " ".join(path) or "kbindex"
        assert command.help and command.help.strip().splitlines()[0], f"{name} has no summary"
        assert "Example" in command.help, f"{name} --help has no example"
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in ("help", "version"):
                assert param.help, f"{name} {param.opts[0]} has no help text"


def test_index_without_source_indexes_what_the_config_declares(kb, tmp_path, monkeypatch, db):
    from kbindex.store.chroma import Store

    monkeypatch.chdir(tmp_path)
    (tmp_path / "kb").mkdir()
    for name in ("printer-offline-windows.html", "postgresql-wal-disk-full.md"):
        (tmp_path / "kb" / name).write_bytes((SAMPLE_KB / name).read_bytes())
    (tmp_path / "kbindex.toml").write_text(
        '[collections.helpdesk]\nchunk_tokens = 200\n\n'
        '[[collections.helpdesk.sources]]\npath = "kb"\noverlap = 16\n\n'
        '[collections.runbooks]\nsources = ["kb/postgresql-wal-disk-full.md"]\n')
    out = kb("index", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["indexed"] == 3  # 2 into helpdesk, 1 into runbooks

    def chunking(name):
        return {m.metadata["chunking"] for m in Store(db).collection(name).scan()}

    assert chunking("helpdesk") == {"200/16"}  # source option > collection option > default
    assert chunking("runbooks") == {"256/32"}
    # an option on the command line beats the config; --collection picks one collection
    out = kb("index", "--collection", "helpdesk", "--chunk-tokens", "128", "--json")
    assert json.loads(out.stdout)["indexed"] == 2
    assert chunking("helpdesk") == {"128/16"}
    out = kb("index", "--collection", "nope-kb")
    assert out.exit_code == 2 and "no collection 'nope-kb' declared" in out.stderr


def test_index_without_source_or_config_is_a_usage_error(kb, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = kb("index")
    assert out.exit_code == 2 and "give at least one SOURCE" in out.stderr
