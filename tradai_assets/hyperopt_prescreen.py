"""What a hyperopt study's materialization says about its pre-screen (kept apart from the study asset so
that asset's own code stays as it was): whether the pre-screen was used, why not, and how well it agreed
with Freqtrade."""

from __future__ import annotations

from typing import Any

from dagster import MetadataValue

from tradai_core.hyperopt import StudyReport


def prescreen_metadata(study: StudyReport) -> dict[str, Any]:
    """Metadata entries of the study's pre-screen ({} when the run did not ask for one)."""
    summary = study.prescreen
    if summary is None:
        return {}
    agreement = summary.agreement
    rho = agreement.spearman if agreement is not None else None
    return {
        "prescreen": summary.note,
        "prescreen_used": summary.used,
        "prescreen_spearman": MetadataValue.float(rho) if rho is not None else MetadataValue.text("n/a"),
        "prescreen_explored": summary.explored,
        "prescreen_sets_per_minute": round(summary.explored_per_minute, 1),
        "prescreened_only_sets": study.prescreened_total,
    }


def prescreen_sentence(metadata: dict[str, Any]) -> str:
    """One sentence for the demo: what the pre-screen did ('' when there was none)."""
    note = metadata.get("prescreen")
    if not note:
        return ""
    if metadata.get("prescreen_used"):
        return (
            f"pre-screen explored {metadata['prescreen_explored']} parameter sets "
            f"({metadata['prescreen_sets_per_minute']}/min) and Freqtrade confirmed the finalists ({note}); "
        )
    return f"{note}; "
