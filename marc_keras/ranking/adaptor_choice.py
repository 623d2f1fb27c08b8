"""Choosing each vector row's adaptor regularisation on validation users (downstream v3)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

from marc_keras.config.adaptor_setting import AdaptorSetting

# Validation AUCs this close to a row's best count as tied: about the spread
# of one ranker's validation AUC between seeds on ml-1m-half (v2 table).
TIE_TOLERANCE = 0.0005


def choose_adaptor_settings(
    cells: Iterable[dict], tiers: Sequence[str], tolerance: float = TIE_TOLERANCE
) -> dict[str, tuple[AdaptorSetting, dict[str, float]]]:
    """Each row's adaptor setting: the best mean validation AUC over `tiers`, ties to the weaker.

    The rule is the same for every row: average each setting's validation
    AUC over the tiers (only settings measured on all of them compete);
    settings within `tolerance` of the best are tied, and the weakest of
    them (`AdaptorSetting.strength`) wins, so a regulariser must earn its
    place. Nothing here reads test users.

    Args:
        cells: grid results, dicts with `row`, `tier`, `setting` (the
            `AdaptorSetting` fields) and `validation_auc`.
        tiers: the tiers to average over.
        tolerance: the tie margin in validation AUC.

    Returns:
        row -> (chosen setting, {setting label: mean validation AUC}).

    Example:
    >>> cells = [{"row": "random", "tier": "kar", "setting": {}, "validation_auc": 0.79}]
    >>> choose_adaptor_settings(cells, ["kar"])["random"][0].label()
    'none'
    """
    found = {}
    for cell in cells:
        if cell["tier"] in tiers:
            setting = AdaptorSetting(**cell["setting"])
            found.setdefault(cell["row"], {}).setdefault(setting, {})[cell["tier"]] = cell[
                "validation_auc"
            ]
    chosen = {}
    for row, settings in found.items():
        complete = {
            setting: statistics.fmean(by_tier[tier] for tier in tiers)
            for setting, by_tier in settings.items()
            if set(by_tier) == set(tiers)
        }
        if not complete:
            continue
        best = max(complete.values())
        tied = [setting for setting, value in complete.items() if value >= best - tolerance]
        winner = min(tied, key=AdaptorSetting.strength)
        chosen[row] = (winner, {setting.label(): value for setting, value in complete.items()})
    return chosen
