"""Who acts on the command line: a name in the users table must prove it (a password, or an
operator token for scheduled scripts); a name that is not there can only be the agent side."""

from __future__ import annotations

import pytest
from builders import analyzed_call
from click.testing import CliRunner

from qa import storage as qadb
from qa.cli import cli
from qa.review import users


@pytest.fixture
def world(cli_env, settings, monkeypatch):
    monkeypatch.delenv("QA_OPERATOR_TOKEN")  # these tests authenticate like a person at a terminal
    qadb.upgrade(settings.effective_database_url)
    engine = qadb.make_engine(settings.effective_database_url)
    with qadb.session_scope(qadb.session_factory(engine)) as s:
        analyzed_call(s, "CALL-1", [("R1", "promise.guaranteed_return", "fatal")], agent_id="A7")
        users.create_user(s, "test", "aud1", "auditor", "auditor-password-1")
        users.create_user(s, "test", "ann", "inspector", "inspector-password")
    engine.dispose()
    runner = CliRunner()
    assert runner.invoke(cli, ["score"]).exit_code == 0
    return runner


def test_a_made_up_name_cannot_take_a_privileged_role(world):
    r = world.invoke(cli, ["appeal", "decide", "1", "overturned", "-m", "x", "--as", "ghost-senior", "--role", "senior"])
    assert r.exit_code == 1 and "only the agent side" in r.output
    r = world.invoke(cli, ["queue", "claim", "--as", "ann.alt", "--role", "inspector"])
    assert r.exit_code == 1 and "only the agent side" in r.output


def test_a_user_must_give_their_password(world):
    r = world.invoke(cli, ["queue", "claim", "--as", "ann"])
    assert r.exit_code == 2 and "needs their password" in r.output
    r = world.invoke(cli, ["queue", "claim", "--as", "ann", "--password-stdin"], input="wrong-password\n")
    assert r.exit_code == 1 and "wrong username or password" in r.output
    r = world.invoke(cli, ["queue", "claim", "--as", "ann", "--password-stdin"], input="inspector-password\n")
    assert r.exit_code == 0 and "claimed item 1" in r.output


def test_unredacted_exports_need_the_auditors_password(world, tmp_path):
    out = str(tmp_path / "u.jsonl")
    assert world.invoke(cli, ["export", "--out", out, "--no-redact", "--as", "aud1"]).exit_code == 2
    r = world.invoke(cli, ["export", "--out", out, "--no-redact", "--as", "aud1", "--password-stdin"],
                     input="guess\n")
    assert r.exit_code == 1 and not (tmp_path / "u.jsonl").exists()
    r = world.invoke(cli, ["export", "--out", out, "--no-redact", "--as", "aud1", "--password-stdin"],
                     input="auditor-password-1\n")
    assert r.exit_code == 0 and "NOT redacted" in r.output


def test_an_operator_token_stands_in_for_the_password(world, monkeypatch):
    import hashlib

    monkeypatch.setenv("QA_OPERATOR_TOKEN_SHA256", hashlib.sha256(b"nightly-token").hexdigest())
    monkeypatch.setenv("QA_OPERATOR_TOKEN", "not-the-token")
    r = world.invoke(cli, ["queue", "claim", "--as", "ann"])
    assert r.exit_code == 1 and "does not match" in r.output
    monkeypatch.setenv("QA_OPERATOR_TOKEN", "nightly-token")
    assert world.invoke(cli, ["queue", "claim", "--as", "ann"]).exit_code == 0
