"""The model registry's vocabulary: model names, aliases, tag keys and artifact paths, defined once.

The `model` asset writes these tags, the strategy reads them in Freqtrade's process, the lifecycle asset and
the sensors move the aliases and keep the audit history. All of them spell the words from here, so renaming
a tag is one edit and a reader can never look for a key no writer sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

MODEL_NAME_PREFIX: Final[str] = "tradai-lgbm"


def default_model_name(timeframe: str) -> str:
    """Registered-model name of the LightGBM model of a timeframe: `tradai-lgbm-1h`."""
    return f"{MODEL_NAME_PREFIX}-{timeframe}"


# -- aliases
CHAMPION: Final[str] = "champion"
"""The version the platform trades; only the promotion flow (or the first sane version) moves it."""
CHALLENGER: Final[str] = "challenger"
"""The newest sane version, compared against the champion before it may be promoted."""
MODEL_ALIASES: Final[tuple[str, ...]] = (CHAMPION, CHALLENGER)

# -- model-version tags written at registration (the `model` asset)
TAG_FEATURE_SET_HASH: Final[str] = "tradai.feature_set_hash"
TAG_HOLDOUT_START: Final[str] = "tradai.holdout_start"
TAG_HOLDOUT_END: Final[str] = "tradai.holdout_end"
TAG_PAIRS: Final[str] = "tradai.pairs"
TAG_TRAINING_SET: Final[str] = "tradai.training_set"
"""`<library>/<symbol>@v<version>`: the stored training set the version learned from."""
TAG_ARCTICDB_PIN: Final[str] = "tradai.arcticdb_snapshot"
TAG_REJECTED: Final[str] = "tradai.rejected"
TAG_BOOTSTRAP: Final[str] = "tradai.bootstrap_champion"

# -- model-version tags written when the champion moves (the `champion_model` asset)
TAG_ARCHIVED: Final[str] = "tradai.archived"
TAG_ARCHIVED_AT: Final[str] = "tradai.archived_at"
TAG_ARCHIVED_REASON: Final[str] = "tradai.archived_reason"
TAG_PROMOTED_AT: Final[str] = "tradai.promoted_at"
TAG_PROMOTED_FROM: Final[str] = "tradai.promoted_from"
TAG_RESTORED_AT: Final[str] = "tradai.restored_at"
TAG_ROLLED_BACK: Final[str] = "tradai.rolled_back"
TAG_VALIDATION: Final[str] = "tradai.validation"

# -- the audit history: one MLflow run per entry in this experiment, plus a glance tag on the model
AUDIT_EXPERIMENT: Final[str] = "model-audit"
TAG_AUDIT_MODEL: Final[str] = "tradai.audit.model"
TAG_AUDIT_ENTRY: Final[str] = "tradai.audit.entry"
TAG_AUDIT_LAST: Final[str] = "tradai.audit.last"
TAG_AUDIT_PREFIX: Final[str] = "tradai.audit."

# -- artifacts of a model version's run
MODEL_ARTIFACT: Final[str] = "model"
REFERENCE_ARTIFACT: Final[str] = "reference/feature_distribution.json"

# -- how a model reaches a strategy inside Freqtrade's process: a file, never a tracking URI
FREQTRADE_SECTION: Final[str] = "tradai"
"""Top-level key of the platform's own section in the Freqtrade config a backtest is given."""


class ExportedModel(BaseModel):
    """One registered model version's LightGBM booster, exported by the parent (the Dagster side) into a
    file of the backtest's workspace: the child running the strategy reads this file only, so it never
    sees a tracking URI (which may carry credentials), and it trades exactly the version the parent
    resolved and records — an alias moved meanwhile changes nothing. `sha256` is the file's digest: a
    file altered or cut short is refused, not traded."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    alias: str | None = None
    """The alias the version was resolved from, when it was (for messages; the version is what counts)."""
    path: Path
    sha256: str

    def moved_to(self, path: Path) -> ExportedModel:
        """The same export, copied to `path` (same digest)."""
        return self.model_copy(update={"path": Path(path)})

    def freqtrade_section(self) -> dict[str, Any]:
        """The platform's section of a Freqtrade config naming this export (JSON-ready)."""
        return {FREQTRADE_SECTION: {"model": self.model_dump(mode="json")}}

    @classmethod
    def from_freqtrade(cls, config: Mapping[str, Any] | None) -> ExportedModel | None:
        """The export a Freqtrade config names (`freqtrade_section`), None when it names none.
        pydantic's ValidationError when the section is malformed."""
        section = (config or {}).get(FREQTRADE_SECTION) or {}
        raw = section.get("model") if isinstance(section, Mapping) else None
        return None if raw is None else cls.model_validate(raw)
