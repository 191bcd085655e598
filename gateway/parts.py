"""What every part of :class:`gateway.service.Gateway` reads: one declaration of the shared collaborators.

Each resource module (recommender, profiles, movie_details, status, served_models) is a mixin of ``Gateway``;
``Gateway.__init__`` sets these attributes, and the mixins inherit their types from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.cache import ResponseCache
    from gateway.catalog import Catalog
    from gateway.impressions import ImpressionRecorder
    from gateway.prior import ItemPrior
    from gateway.rules import RulesStore
    from gateway.state import StateReader
    from gateway.telemetry import Telemetry
    from reelstream.settings import Settings

__all__ = ["GatewayParts"]


class GatewayParts:
    """The collaborators the gateway's resources share (set by ``Gateway.__init__``)."""

    settings: Settings
    catalog: Catalog
    rules: RulesStore
    state: StateReader
    telemetry: Telemetry
    prior: ItemPrior
    cache: ResponseCache
    impressions: ImpressionRecorder | None
