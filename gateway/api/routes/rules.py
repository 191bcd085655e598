"""GET and PUT /rules (bearer token); GET /rules/arms (public: the arms the dashboard switches between and shows)."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api.deps import AdminDep, GatewayDep
from gateway.api.models import ArmPublic, ArmsPublic, RulesPublic
from gateway.rules import SEGMENTS, LoadedRules, RulesDocument

router = APIRouter(prefix="/rules", tags=["rules"])


def _public(loaded: LoadedRules, error: str | None) -> RulesPublic:
    return RulesPublic(
        name=loaded.doc.name, version=loaded.doc.version, rules_version=loaded.version, reload_error=error,
        document=loaded.doc.model_dump(mode="json"),
    )  # fmt: skip


@router.get("", response_model=RulesPublic, responses={401: {}})
def get_rules(gateway: GatewayDep, _: AdminDep) -> RulesPublic:
    """The live rules document and its version."""
    return _public(gateway.rules.current(), gateway.rules.last_error)


@router.put("", response_model=RulesPublic, responses={401: {}})
def put_rules(body: RulesDocument, gateway: GatewayDep, _: AdminDep) -> RulesPublic:
    """Replace the rules (validated; ``version`` becomes at least the current one plus one)."""
    return _public(gateway.rules.replace(body), None)


@router.get("/arms", response_model=ArmsPublic)
def get_arms(gateway: GatewayDep) -> ArmsPublic:
    """The live rule set's name and version, its A/B variants (weights, exploration kind) and its segments."""
    loaded = gateway.rules.current()
    arms = [
        ArmPublic(name=name, weight=weight,
                  exploration={s: loaded.rules_for(s, name).exploration.kind for s in SEGMENTS})
        for name, weight in loaded.arms
    ]  # fmt: skip
    return ArmsPublic(
        rule_set=loaded.doc.name, rules_version=loaded.version, variants=[name for name, _ in loaded.arms],
        segments=list(SEGMENTS), arms=arms,
    )  # fmt: skip
