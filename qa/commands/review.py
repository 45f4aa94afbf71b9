"""Scoring, review queues, the inspector workflow, appeals, calibration and the audit log.

Identity: ``--as USER`` (or ``QA_USER``) names who acts. A user in the users table acts with
their role; anyone else (the agent side, or before logins exist) must give ``--role``. This
is attribution for the audit log, not authentication: the web UI has real logins.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import click

from ..domain import APPEAL_OUTCOMES, DECISIONS, REVIEW_STATUSES, TIERS, VERDICTS
from ..errors import PermissionDenied
from ..labels import REASON_LABELS
from ..permissions import ACTOR_ROLES, Actor
from .common import EXIT_TAMPERED, App, domain_errors, echo_table, pass_app


def resolve_actor(app: App, session, username: str, role: str | None, password: str | None) -> Actor:
    """The actor for ``--as``/``--role``. A name in the users table acts in its own role once
    authenticated (:func:`~qa.commands.common.authenticate`); anyone else may only be the agent
    side (``--role agent``), which can do nothing but appeal its own failed calls."""
    from sqlalchemy import select

    from ..permissions import AGENT
    from ..storage.models import User
    from .common import authenticate

    user = session.scalars(select(User).where(User.username == username)).first()
    if user is not None:
        if not user.active:
            raise PermissionDenied(f"user {username} is disabled")
        if role is not None and role != user.role:
            raise PermissionDenied(f"user {username} has role {user.role}, not {role}")
        user = authenticate(app, session, username, password)
        actor = Actor(username, user.role)
    else:
        if role is None:
            raise click.UsageError(f"{username} is not in the users table: give --role agent for the agent side "
                                   "(anyone else needs an account: qa users add)")
        if role != AGENT:
            raise PermissionDenied(f"{username} is not in the users table: only the agent side (--role agent) "
                                   "acts without an account")
        actor = Actor(username, role)
    actor.validate()
    return actor


def identity(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Adds ``--as``, ``--role`` and ``--password-stdin``; the command gets ``actor_name`` and
    ``actor_role`` (the password is read when the action runs)."""

    @click.option("--as", "actor_name", envvar="QA_USER", required=True, metavar="USER",
                  help="Who acts (default: $QA_USER); a user of the users table, who must authenticate.")
    @click.option("--role", "actor_role", type=click.Choice(ACTOR_ROLES),
                  help="agent: the agent side appealing their own call (no account needed).")
    @click.option("--password-stdin", is_flag=True,
                  help="Read USER's password from the first line of stdin (else a prompt, or QA_OPERATOR_TOKEN).")
    @functools.wraps(fn)
    def wrapper(*args, password_stdin: bool = False, **kwargs):
        click.get_current_context().meta["qa.password_stdin"] = password_stdin
        return fn(*args, **kwargs)

    return wrapper


def _work(app: App, actor_name: str, actor_role: str | None, action: Callable[..., Any]) -> Any:
    """Run one action as ``--as`` in one write transaction (the password is asked for before
    the transaction takes the database's write lock)."""
    from ..storage import write_session
    from .common import credential

    password = credential(app, actor_name, click.get_current_context().meta.get("qa.password_stdin", False),
                          needed=actor_role is None)
    with write_session(app.session_factory) as session:
        actor = resolve_actor(app, session, actor_name, actor_role, password)
        result = action(session, actor)
        session.commit()
        return result


# --- qa score ----------------------------------------------------------------------------------

@click.command("score")
@click.argument("call_ids", nargs=-1)
@click.option("--auto-assign", is_flag=True,
              help="Assign new review items round-robin to the active inspectors (the auto_assign setting).")
@pass_app
@domain_errors
def score_cmd(app: App, call_ids: tuple[str, ...], auto_assign: bool) -> None:
    """Assess analyzed calls (score, fatal flag, tier) and route flagged and sampled calls
    into the review queues with their SLA due times, as a batch run of the score stage."""
    import dataclasses

    from .pipeline import exit_code, print_failures, run

    settings = dataclasses.replace(app.settings, auto_assign=True) if auto_assign else app.settings
    result = run(app, settings, kind="score", steps=("score",), call_ids=call_ids, executor="serial")
    scored = [o for o in result.outcomes if o.stage == "score"]
    tiers = result.figures.tiers
    click.echo(f"score: {len(scored)} calls assessed, {sum(1 for o in scored if o.ok and o.value)} routed "
               f"(T1 {tiers.get('T1', 0)}, T2 {tiers.get('T2', 0)}, T3 {tiers.get('T3', 0)}, "
               f"calibration sample {result.figures.calibration_items}), "
               f"{sum(1 for o in scored if o.ok and not o.value)} need no review, {len(result.failures)} failed")
    print_failures(result)
    sys.exit(exit_code(result))


# --- qa queue ----------------------------------------------------------------------------------

@click.group("queue")
def queue_group() -> None:
    """Tiered review queues: list, claim, release, assign."""


@queue_group.command("list")
@click.option("--tier", type=click.Choice(TIERS))
@click.option("--status", "statuses", multiple=True, default=("open", "claimed"), show_default=True,
              type=click.Choice(REVIEW_STATUSES))
@click.option("--overdue", is_flag=True, help="Only items past their due time.")
@click.option("--assigned-to", metavar="USER")
@click.option("--category", metavar="ID", help="Only items with a finding of this category.")
@click.option("--agent", metavar="ID")
@click.option("--team")
@click.option("--day", metavar="DAY", help="Calls started this local day (YYYY-MM-DD, today, yesterday).")
@click.option("--call", "call_search", metavar="TEXT", help="Call ids containing TEXT.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
@pass_app
@domain_errors
def queue_list(app: App, tier: str | None, statuses: tuple[str, ...], overdue: bool, assigned_to: str | None,
               category: str | None, agent: str | None, team: str | None, day: str | None,
               call_search: str | None, limit: int) -> None:
    """Items in work order (tier, then due time), with per-tier counts and each item's top
    findings."""
    from .. import review
    from ..labels import category_label
    from .pipeline import day_option

    filters = review.QueueFilters(tier=tier, statuses=statuses, overdue_only=overdue, assigned_to=assigned_to,
                                  category=category, agent=agent, team=team, day=day_option(app, day),
                                  call_search=call_search)
    with app.session_factory() as session:
        counts = review.queue_counts(session)
        page = review.queue_page(session, filters, limit=limit, tz=app.settings.tz)
    click.echo("  ".join(f"{c.tier}: {c.open} open, {c.claimed} claimed, {c.overdue} overdue" for c in counts))
    echo_table([(e.item_id, e.tier, e.status, e.call_id, e.agent_id, e.team, e.score,
                 "、".join(category_label(f.category) for f in e.top_findings) or REASON_LABELS.get(e.reason, e.reason),
                 app.clock(e.due_at), "OVERDUE" if e.overdue else "", e.assigned_to, e.claimed_by) for e in page],
               ("item", "tier", "status", "call", "agent", "team", "score", "findings",
                f"due ({app.settings.timezone})", "", "assigned", "claimed by"))
    if page.next_cursor is not None:
        click.echo("(more items: raise --limit or narrow the filters)")


@queue_group.command("claim")
@click.argument("item_id", type=int, required=False)
@click.option("--tier", type=click.Choice(TIERS), help="Claim the next item of this tier only.")
@identity
@pass_app
@domain_errors
def queue_claim(app: App, item_id: int | None, tier: str | None, actor_name: str, actor_role: str | None) -> None:
    """Claim ITEM_ID, or the next item in work order."""

    from .. import review
    policy = review.ReviewPolicy.from_settings(app.settings)

    def act(session, actor):
        if item_id is not None:
            return review.claim(session, actor, item_id, policy)
        return review.claim_next(session, actor, policy, tier=tier)

    item = _work(app, actor_name, actor_role, act)
    if item is None:
        click.echo("queue empty: nothing to claim")
        return
    click.echo(f"claimed item {item.id} ({item.tier}, due {app.clock(item.due_at)} UTC) until "
               f"{app.clock(item.claim_expires_at)} UTC")


@queue_group.command("release")
@click.argument("item_id", type=int)
@identity
@pass_app
@domain_errors
def queue_release(app: App, item_id: int, actor_name: str, actor_role: str | None) -> None:
    """Give a claimed item back to the queue."""

    from .. import review
    _work(app, actor_name, actor_role, lambda s, a: review.release(s, a, item_id))
    click.echo(f"released item {item_id}")


@queue_group.command("assign")
@click.argument("item_id", type=int, required=False)
@click.argument("username", required=False)
@click.option("--round-robin", is_flag=True, help="Deal all open unassigned items to the active inspectors.")
@click.option("--tier", type=click.Choice(TIERS))
@identity
@pass_app
@domain_errors
def queue_assign(app: App, item_id: int | None, username: str | None, round_robin: bool, tier: str | None,
                 actor_name: str, actor_role: str | None) -> None:
    """Assign ITEM_ID to USERNAME, or --round-robin (seniors and admins)."""

    from .. import review
    if round_robin == (item_id is not None):
        raise click.UsageError("give ITEM_ID USERNAME or --round-robin")
    if round_robin:
        assigned = _work(app, actor_name, actor_role, lambda s, a: review.assign_round_robin(s, a, tier=tier))
        per_user: dict[str, int] = {}
        for user in assigned.values():
            per_user[user] = per_user.get(user, 0) + 1
        click.echo(f"assigned {len(assigned)} items: " + ", ".join(f"{u} {n}" for u, n in sorted(per_user.items())))
    else:
        _work(app, actor_name, actor_role, lambda s, a: review.assign(s, a, item_id, username))
        click.echo(f"item {item_id} assigned to {username}")


# --- qa review ---------------------------------------------------------------------------------

@click.group("review")
def review_group() -> None:
    """Work a claimed item: show, decide findings, add missed ones, close with a verdict."""


@review_group.command("show")
@click.argument("item_id", type=int)
@pass_app
@domain_errors
def review_show(app: App, item_id: int) -> None:
    """An item with its findings, decisions, appeals and audit history."""

    from .. import review
    with app.session_factory() as session:
        d = review.get_item(session, item_id)
    it, a = d.item, d.assessment
    click.echo(f"item {it.id}  call {d.call.call_id}  agent {d.call.agent_id or '-'}  tier {it.tier} ({it.reason})  "
               f"status {it.status}")
    click.echo(f"assessment: score {a.score:.1f}  fatal {'yes' if a.fatal else 'no'}  reasons: "
               f"{', '.join(a.reasons) or '-'}")
    who = (f"closed by {it.closed_by} at {app.clock(it.closed_at)} UTC" if it.closed_by
           else f"claimed by {it.claimed_by} until {app.clock(it.claim_expires_at)} UTC" if it.status == "claimed"
           else "not claimed")
    click.echo(f"due {app.clock(it.due_at)} UTC  {who}  verdict {it.verdict or '-'}  "
               f"final score {'-' if it.final_score is None else f'{it.final_score:.1f}'}")
    rows = []
    for v in d.findings:
        f = v.finding
        span = "" if f.start_s is None else f"{f.start_s:.1f}-{(f.end_s or f.start_s):.1f}s"
        decisions = "; ".join(f"{x.reviewer}: {x.decision}" + (f" ({x.comment})" if x.comment else "")
                              for x in v.decisions)
        rows.append((f.id, f.source, f.rule_id, f.category, f.severity, span, (f.matched_text or "")[:30], decisions))
    echo_table(rows, ("finding", "source", "rule", "category", "severity", "time", "matched", "decisions"))
    for ap in d.appeals:
        click.echo(f"appeal {ap.id} by {ap.opened_by} at {app.clock(ap.opened_at)}: {ap.reason} -> {ap.status}"
                   + (f" by {ap.decided_by}: {ap.decision_reason}" if ap.decided_by else ""))
    if d.history:
        click.echo("history:")
        for ev in d.history:
            click.echo(f"  #{ev.seq} {app.clock(ev.ts)} {ev.actor} {ev.action} {ev.object_type}:{ev.object_id}")


@review_group.command("decide")
@click.argument("item_id", type=int)
@click.argument("finding_id", type=int)
@click.argument("decision", type=click.Choice(DECISIONS))
@click.option("--comment", "-m")
@identity
@pass_app
@domain_errors
def review_decide(app: App, item_id: int, finding_id: int, decision: str, comment: str | None,
                  actor_name: str, actor_role: str | None) -> None:
    """Confirm a finding, or reject it as a false positive."""

    from .. import review
    _work(app, actor_name, actor_role, lambda s, a: review.decide(s, a, item_id, finding_id, decision, comment))
    click.echo(f"finding {finding_id}: {decision}")


@review_group.command("add")
@click.argument("item_id", type=int)
@click.option("--category", required=True, help="A category id of qa/data/taxonomy.yaml.")
@click.option("--severity", type=click.Choice(("fatal", "major", "minor")), help="Default: the category's.")
@click.option("--start", "start_s", type=float, help="Seconds from the start of the call.")
@click.option("--end", "end_s", type=float)
@click.option("--speaker", type=click.Choice(("agent", "customer")), help="Default: the category's role.")
@click.option("--comment", "-m")
@identity
@pass_app
@domain_errors
def review_add(app: App, item_id: int, category: str, severity: str | None, start_s: float | None,
               end_s: float | None, speaker: str | None, comment: str | None, actor_name: str,
               actor_role: str | None) -> None:
    """Add a finding the system missed."""

    from .. import review
    finding = _work(app, actor_name, actor_role, lambda s, a: review.add_finding(
        s, a, item_id, category=category, severity=severity, start_s=start_s, end_s=end_s, role=speaker,
        comment=comment))
    click.echo(f"added finding {finding.id} ({finding.category}, {finding.severity})")


@review_group.command("close")
@click.argument("item_id", type=int)
@click.option("--verdict", type=click.Choice(VERDICTS), help="Default: fail with a kept fatal/major finding.")
@click.option("--score", "final_score", type=float, help="Final score (default: from the kept findings).")
@click.option("--comment", "-m")
@identity
@pass_app
@domain_errors
def review_close(app: App, item_id: int, verdict: str | None, final_score: float | None, comment: str | None,
                 actor_name: str, actor_role: str | None) -> None:
    """Close a claimed item with the call verdict and final score."""

    from .. import review
    policy = review.ReviewPolicy.from_settings(app.settings)
    item = _work(app, actor_name, actor_role,
                 lambda s, a: review.close(s, a, item_id, verdict, final_score, comment, policy))
    click.echo(f"item {item.id} closed: {item.verdict}, score {item.final_score:.1f}")


# --- qa appeal ---------------------------------------------------------------------------------

@click.group("appeal")
def appeal_group() -> None:
    """Appeals (申诉) against failed calls, decided by a senior inspector."""


@appeal_group.command("open")
@click.argument("item_id", type=int)
@click.option("--reason", "-m", required=True)
@identity
@pass_app
@domain_errors
def appeal_open(app: App, item_id: int, reason: str, actor_name: str, actor_role: str | None) -> None:
    """Appeal the fail verdict of ITEM_ID (the agent, or a senior on their behalf)."""

    from .. import review
    policy = review.ReviewPolicy.from_settings(app.settings)
    appeal = _work(app, actor_name, actor_role, lambda s, a: review.open_appeal(s, a, item_id, reason, policy))
    click.echo(f"appeal {appeal.id} opened on item {item_id}")


@appeal_group.command("decide")
@click.argument("item_id", type=int)
@click.argument("outcome", type=click.Choice(APPEAL_OUTCOMES))
@click.option("--reason", "-m", required=True)
@click.option("--score", "final_score", type=float, help="New final score when overturning.")
@identity
@pass_app
@domain_errors
def appeal_decide(app: App, item_id: int, outcome: str, reason: str, final_score: float | None,
                  actor_name: str, actor_role: str | None) -> None:
    """Uphold or overturn the open appeal of ITEM_ID (senior inspectors)."""

    from .. import review

    def act(session, actor):
        appeal = review.find_appeal(session, item_id)
        return review.decide_appeal(session, actor, appeal.id, outcome, reason, final_score)

    appeal = _work(app, actor_name, actor_role, act)
    click.echo(f"appeal {appeal.id} on item {item_id}: {appeal.status}")


# --- qa calibrate ------------------------------------------------------------------------------

def _call_pk(session, call_id: str) -> int:
    from sqlalchemy import select

    from ..storage.models import Call

    pk = session.scalar(select(Call.id).where(Call.call_id == call_id))
    if pk is None:
        raise click.ClickException(f"unknown call {call_id}")
    return pk


@click.group("calibrate")
def calibrate_group() -> None:
    """Calibration sessions (several inspectors judge the same calls) and the miss rate."""


@calibrate_group.command("start")
@click.argument("name")
@click.option("--call", "call_ids", multiple=True, required=True, metavar="CALL_ID")
@click.option("--inspector", "inspectors", multiple=True, required=True, metavar="USER")
@identity
@pass_app
@domain_errors
def calibrate_start(app: App, name: str, call_ids: tuple[str, ...], inspectors: tuple[str, ...],
                    actor_name: str, actor_role: str | None) -> None:
    """Start session NAME over --call ids with the --inspector users (seniors and admins)."""

    from ..review import calibration

    def act(session, actor):
        return calibration.start_session(session, actor, name, [_call_pk(session, c) for c in call_ids], inspectors)

    cs = _work(app, actor_name, actor_role, act)
    click.echo(f"calibration session {cs.id} ({cs.name}): {len(cs.call_ids)} calls, "
               f"inspectors {', '.join(cs.inspectors)}")


@calibrate_group.command("vote")
@click.argument("session_id", type=int)
@click.argument("call_id")
@click.argument("item", metavar="ITEM")
@click.argument("value")
@identity
@pass_app
@domain_errors
def calibrate_vote(app: App, session_id: int, call_id: str, item: str, value: str, actor_name: str,
                   actor_role: str | None) -> None:
    """Judge ITEM of CALL_ID: ``verdict pass|fail`` or ``finding:<id> confirmed|rejected``."""

    from ..review import calibration
    _work(app, actor_name, actor_role,
          lambda s, a: calibration.vote(s, a, session_id, _call_pk(s, call_id), item, value))
    click.echo(f"vote recorded: {call_id} {item} = {value}")


def _fmt_kappa(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@calibrate_group.command("report")
@click.argument("session_id", type=int, required=False)
@click.option("--miss-rate", is_flag=True, help="Report the miss rate from the reviewed calibration sample instead.")
@pass_app
@domain_errors
def calibrate_report(app: App, session_id: int | None, miss_rate: bool) -> None:
    """Agreement of session SESSION_ID (per item, Cohen's/Fleiss' kappa), or --miss-rate."""

    from sqlalchemy import select

    from ..review import calibration
    from ..storage.models import Call
    if miss_rate == (session_id is not None):
        raise click.UsageError("give SESSION_ID or --miss-rate")
    with app.session_factory() as session:
        if miss_rate:
            mr = calibration.miss_rate(session)
            o = mr.overall
            rate = "n/a" if o.rate is None else f"{o.rate:.1%}"
            click.echo(f"miss rate: {o.faulty} of {o.reviewed} reviewed unflagged sample calls faulty = {rate} "
                       f"(95% Wilson {o.low:.1%}-{o.high:.1%})")
            est = mr.estimated_missed
            if est is not None:
                click.echo(f"of {mr.unflagged_calls} unflagged calls, about {est[0]:.0f} faulty "
                           f"({est[1]:.0f}-{est[2]:.0f})")
            echo_table([(p.label, p.faulty, p.reviewed, f"{p.rate:.1%}", f"{p.low:.1%}-{p.high:.1%}")
                        for p in mr.by_category], ("category", "faulty", "reviewed", "rate", "95% CI"))
            return
        rep = calibration.report(session, session_id)
        calls = dict(session.execute(select(Call.id, Call.call_id)).all())
    click.echo(f"session {rep.session_id} ({rep.name}): inspectors {', '.join(rep.inspectors)}; "
               f"{rep.complete_items} of {len(rep.items)} items judged by all")
    mean = "n/a" if rep.mean_agreement is None else f"{rep.mean_agreement:.1%}"
    click.echo(f"mean pairwise agreement {mean}, Fleiss' kappa {_fmt_kappa(rep.fleiss_kappa)}, "
               f"Cohen's kappa {_fmt_kappa(rep.cohen_kappa)}")
    echo_table([(calls.get(i.call_id, i.call_id), i.item_key, " ".join(f"{k}={v}" for k, v in sorted(i.votes.items())),
                 "" if i.agreement is None else f"{i.agreement:.0%}", i.majority or "tie") for i in rep.items],
               ("call", "item", "votes", "agreement", "majority"))


# --- qa audit ----------------------------------------------------------------------------------

@click.group("audit")
def audit_group() -> None:
    """The hash-chained audit log."""


@audit_group.command("verify")
@click.option("--anchor", metavar="SEQ:HASH", help="A head printed by an earlier verify; the chain must still pass it.")
@click.option("--public-key", help="The signing key's public half (qa audit pubkey); default: from audit_key_file.")
@pass_app
@domain_errors
def audit_verify(app: App, anchor: str | None, public_key: str | None) -> None:
    """Recompute the chain and check it against the signed checkpoints (and the newest one kept
    beside the signing key); exit status 3 and the seq of every problem when it is broken or was
    cut, rewritten or stripped of checkpoints. Events after the last checkpoint are listed as not
    yet anchored."""
    from .. import audit, signing
    from .export import public_verifier

    anchor_pair = None
    if anchor:
        seq, _, digest = anchor.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise click.UsageError("--anchor must look like SEQ:HASH (64 hex digits)")
        anchor_pair = (int(seq), digest)
    verifier = public_verifier(app, public_key)
    database = signing.database_id(app.settings.effective_database_url)
    expected = signing.anchor_of(app.settings.audit_key_file, database) if not public_key else None
    with app.session_factory() as session:
        result = audit.verify(session, anchor=anchor_pair, verifier=verifier, database=database,
                              expected_anchor=expected)
    if result.ok:
        click.echo(f"audit log OK: {result.events} events, head {result.head_seq}:{result.head_hash}")
        if result.key_id:
            click.echo(f"{result.checkpoints} signed checkpoint(s) checked with key {result.key_id}, "
                       f"the last at seq {result.anchored_seq}")
        if result.unanchored:
            click.echo(f"{result.unanchored} event(s) after the last checkpoint are not anchored yet "
                       "(qa audit checkpoint signs them)")
        return
    click.echo(f"audit log BROKEN: {len(result.problems)} problem(s) in {result.events} events; "
               f"first at seq {result.first_bad_seq}", err=True)
    for p in result.problems:
        click.echo(f"  seq {p.seq}: {p.kind}: {p.message}", err=True)
    sys.exit(EXIT_TAMPERED)


@audit_group.command("checkpoint")
@pass_app
@domain_errors
def audit_checkpoint(app: App) -> None:
    """Sign the chain's current head now (exports and batch runs do it on their own)."""
    from .. import audit

    cp = audit.checkpoint_now(app.session_factory, app.settings.audit_key_file, app.settings.effective_database_url,
                              "qa audit checkpoint")
    click.echo(f"checkpoint at seq {cp['seq']} ({cp['head_hash'][:16]}…) signed with key {cp['key_id']}")


@audit_group.command("keygen")
@click.option("--force", is_flag=True, help="Replace an existing key (what it signed stops verifying).")
@pass_app
@domain_errors
def audit_keygen(app: App, force: bool) -> None:
    """Create the signing key at the audit_key_file setting's path (outside the data
    directory) and print its public half."""
    from .. import signing

    key = signing.create_key(app.settings.audit_key_file, overwrite=force)
    click.echo(f"signing key written to {key.path} (mode 0600)")
    click.echo(f"public key {key.verifier.public_hex} (key id {key.key_id}): keep a copy apart from this machine")


@audit_group.command("pubkey")
@pass_app
@domain_errors
def audit_pubkey(app: App) -> None:
    """Print the public half of the signing key (to verify exports and the chain elsewhere)."""
    from .. import signing

    key = signing.load_key(app.settings.audit_key_file)
    if key is None:
        raise click.ClickException(f"no signing key at {app.settings.audit_key_file}: qa audit keygen creates one")
    click.echo(key.verifier.public_hex)


@audit_group.command("log")
@click.option("--object", "obj", metavar="TYPE[:ID]", help="e.g. review_item:12")
@click.option("--limit", default=50, show_default=True)
@pass_app
@domain_errors
def audit_log(app: App, obj: str | None, limit: int) -> None:
    """Latest events, newest first."""

    from .. import audit
    object_type, _, object_id = (obj or "").partition(":")
    with app.session_factory() as session:
        events = audit.history(session, object_type or None, object_id or None, limit=limit)
    echo_table([(e.seq, app.clock(e.ts), e.actor, e.action, f"{e.object_type}:{e.object_id}") for e in events],
               ("seq", f"time ({app.settings.timezone})", "actor", "action", "object"))


def register(group: click.Group) -> None:
    for command in (score_cmd, queue_group, review_group, appeal_group, calibrate_group, audit_group):
        group.add_command(command)
