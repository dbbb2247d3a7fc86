"""Several sessions on one federation: the same clients, one aggregation rule per session.

Starting a federation costs seconds (a controller, combiners, clients that load their
data); a session costs only its rounds. Studies that compare rules on the same clients
therefore start each federation once and run one session per rule, each from the same
seed model, through the launcher's public API (`LocalFederation`), as a user would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from stratafl.errors import StrataError
from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.launch.report import RoundSummary, round_summary
from stratafl.params import Params
from stratafl.settings import SessionConfig
from stratafl.status import SessionStatus


@dataclass(frozen=True)
class SessionResult:
    """One finished session: its settings, its rounds and its final model (and each
    round's global model, when `run_sessions` was asked for them)."""

    config: SessionConfig
    rounds: list[RoundSummary]
    final: Params
    round_models: list[Params] = field(default_factory=list)


def run_sessions(
    spec: FederationSpec, sessions: Sequence[SessionConfig], *, round_models: bool = False
) -> list[SessionResult]:
    """Start ``spec``'s federation, run ``sessions`` one after another from one seed model,
    stop everything. ``round_models`` also downloads each round's global model, for
    metrics per round that validation does not report (a backdoor's success rate): the
    controller then keeps every model (``FederationSpec.keep_every_model``).
    Raises StrataError if a session does not finish."""
    if round_models:
        spec = dataclasses.replace(spec, keep_every_model=True)
    results = []
    with LocalFederation(spec) as federation:
        seed = federation.upload_seed_model()
        federation.wait_for_clients(spec.clients)
        for config in sessions:
            session, records = federation.run_session(
                config.model_copy(update={"seed_model_id": seed.id})
            )
            if session.status != SessionStatus.FINISHED or session.final_model_id is None:
                raise StrataError(
                    f"session {session.id} ({config.aggregator}) {session.status}: "
                    f"{session.reason}; see the logs in {federation.workdir / 'logs'}"
                )
            final = federation.client.download_params(session.final_model_id)
            models = [
                federation.client.download_params(r.model_out)
                for r in records
                if round_models and r.model_out is not None
            ]
            results.append(
                SessionResult(config, [round_summary(r) for r in records], final, models)
            )
    return results
