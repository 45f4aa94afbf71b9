"""Who may do what: the one table from capability to roles, used by the library (which
enforces it), the command line and the web UI (which show or hide what a role cannot do).

A new role (a team lead, say) is one line per capability here. ``agent`` is not a login role:
it is the call-centre agent's side, which may appeal its own failed calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import PermissionDenied

INSPECTOR, SENIOR, AUDITOR, ADMIN = "inspector", "senior", "auditor", "admin"
AGENT = "agent"
USER_ROLES = (INSPECTOR, SENIOR, AUDITOR, ADMIN)  # roles of accounts (the users table)
ACTOR_ROLES = USER_ROLES + (AGENT,)  # roles an action can be taken in
ROLE_LABELS = {INSPECTOR: "质检员", SENIOR: "高级质检员", AUDITOR: "合规审计", ADMIN: "管理员", AGENT: "坐席"}

CAPABILITIES: dict[str, tuple[str, ...]] = {
    # reading
    "queue.view": (INSPECTOR, SENIOR, AUDITOR, ADMIN),
    "item.view": (INSPECTOR, SENIOR, AUDITOR, ADMIN),
    "dashboard.view": (INSPECTOR, SENIOR, AUDITOR, ADMIN),
    "calibration.view": (INSPECTOR, SENIOR, AUDITOR, ADMIN),
    "transcript.raw": (SENIOR, AUDITOR, ADMIN),  # unmasked PII, each view audited
    # reviewing
    "review.work": (INSPECTOR, SENIOR, ADMIN),  # claim, release one's own, decide, add findings, close
    "review.assignee": (INSPECTOR, SENIOR),  # who round-robin assignment deals items to
    "review.supervise": (SENIOR, ADMIN),  # assign, take over or release others' claims
    "appeal.view": (SENIOR, ADMIN),
    "appeal.open": (SENIOR, ADMIN, AGENT),  # the agent only for their own calls
    "appeal.decide": (SENIOR,),
    "calibration.manage": (SENIOR, ADMIN),
    "calibration.vote": (INSPECTOR, SENIOR, ADMIN),
    # compliance and administration
    "export.create": (AUDITOR, ADMIN),
    "export.unredacted": (AUDITOR, ADMIN),
    "users.manage": (ADMIN,),
    "data.purge": (ADMIN,),  # erase calls' personal data (qa purge)
}


def roles_for(capability: str) -> tuple[str, ...]:
    try:
        return CAPABILITIES[capability]
    except KeyError:
        raise KeyError(f"unknown capability {capability!r}") from None


def can(role: str, capability: str) -> bool:
    return role in roles_for(capability)


@dataclass(frozen=True)
class Actor:
    """Who acts. ``role`` is a user role, or ``agent`` for the call-center agent side (whose
    ``username`` is the agent id on the call)."""

    username: str
    role: str

    def validate(self) -> None:
        if not self.username or not self.username.strip():
            raise ValueError("actor needs a username")
        if self.role not in ACTOR_ROLES:
            raise ValueError(f"role must be one of {', '.join(ACTOR_ROLES)}, got {self.role!r}")

    def can(self, capability: str) -> bool:
        return can(self.role, capability)

    def require(self, capability: str, what: str) -> None:
        """Raise :class:`PermissionDenied` unless this actor's role has ``capability``."""
        self.validate()
        roles = roles_for(capability)
        if self.role not in roles:
            raise PermissionDenied(f"{self.username} ({self.role}) may not {what}; needs {' or '.join(roles)}")
