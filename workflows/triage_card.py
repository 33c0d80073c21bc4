"""The triage model card of a run (:class:`models.model_card.ModelCard`): intended use and what is out of scope,
the features and calibration, the decision rule with the operating points chosen on validation, the NEWS2 safety
floor, the training provenance and data, and the known limitations. The card travels in the ONNX file's metadata
and is logged to MLflow beside it.
"""

from __future__ import annotations

from typing import Any

from models.model_card import ModelCard
from models.registry import TRIAGE_MODEL, Tag
from models.triage.news2 import FLOOR
from training.config import TriageTrainConfig
from training.data import TriageDataset
from training.train_triage import TrainedTriageModel


def triage_model_card(
    config: TriageTrainConfig,
    trained: TrainedTriageModel,
    chosen: dict[str, Any],
    *,
    stamp: str,
    target_sensitivity: float,
    commit: str,
    synthetic: bool,
    train: TriageDataset,
    test: TriageDataset,
    external: TriageDataset | None,
) -> ModelCard:
    """The card of a triage model trained with ``config``, before evaluation (no ``metrics`` yet).

    Parameters
    ----------
    config : TriageTrainConfig
        The training configuration (recorded in full).
    trained : TrainedTriageModel
        The trained model: its encoder, temperatures, best epochs and splits.
    chosen : dict
        What was decided on the validation split (:func:`workflows.triage.validation_summary`): ``auroc``,
        ``acuity``, ``thresholds`` and ``band_weights``.
    stamp : str
        The run's UTC time stamp, the card's version.
    target_sensitivity : float
        The sensitivity at which each outcome's operating threshold was chosen.
    commit : str
        The git commit of the code that trained it.
    synthetic : bool
        Whether the model was trained on the synthetic generator.
    train, test, external : TriageDataset
        The datasets (``external`` None when there is none).
    """
    return ModelCard(
        name=TRIAGE_MODEL,
        version=f"{stamp}",
        task="ED triage: acuity level 1-5, P(admission), P(critical care or death in ED)",
        created_utc=stamp,
        intended_use=(
            "Decision support at ED triage for adults and children: a recommended acuity level and "
            "calibrated risks of admission and of critical care, shown to the triage clinician "
            "beside NEWS2."
        ),
        out_of_scope=[
            "Autonomous triage without a clinician",
            "Populations unlike the training data without local validation",
            "Pre-hospital or ward deterioration scoring",
        ],
        features=trained.encoder.to_dict(),
        calibration={
            "method": "temperature scaling on the validation split",
            "acuity_temperature": trained.acuity_temperature,
            "outcome_temperatures": dict(zip(("admitted", "critical"), trained.outcome_temperatures, strict=True)),
        },
        decision_rule={
            "under_triage_weight": config.under_triage_weight,
            **(
                {
                    "under_triage_weight_by_age_band": {
                        b: v["weight"] for b, v in chosen["band_weights"].items() if "|" not in b
                    },
                    "under_triage_weight_by_age_band_sex": {
                        b: v["weight"] for b, v in chosen["band_weights"].items() if "|" in b
                    },
                    "age_band_operating_points": {
                        "target_high_acuity_under_triage": config.high_acuity_under_triage_target,
                        "chosen_on": "validation split of the training years (served level, with the floor)",
                        "bands": chosen["band_weights"],
                    },
                }
                if chosen["band_weights"]
                else {}
            ),
            "outcome_thresholds": chosen["thresholds"],
            "outcome_target_sensitivity": target_sensitivity,
            "rule": "smallest level k with P(level <= k) >= 1 / (1 + w), w = the visit's age band x sex "
            "cell's under_triage_weight_by_age_band_sex (sex not recorded: the band's larger), "
            "else its age band's under_triage_weight_by_age_band, else under_triage_weight",
            "validation": chosen["acuity"],
        },
        safety_floor={
            "rule": "recommended level = min(model level, NEWS2 minimum level)",
            "news2_band_to_minimum_level": dict(FLOOR),
        },
        training={
            "config": config.to_dict(),
            "best_epochs": trained.best_epochs,
            Tag.GIT_COMMIT: commit,
            "n_train": len(trained.train_ids),
            "n_validation": len(trained.validation_ids),
            "validation_auroc": chosen["auroc"],
        },
        data={
            "train": {"name": train.name, "digest": train.digest, "files": train.source_files},
            "test": {"name": test.name, "digest": test.digest, "files": test.source_files},
            "external": (
                {"name": external.name, "digest": external.digest, "files": external.source_files} if external else None
            ),
        },
        limitations=[
            "NHAMCS records no consciousness level, GCS or supplemental oxygen: NEWS2 on NHAMCS is partial "
            "(those parameters score 0), which understates NEWS2 there.",
            "NHAMCS has reason-for-visit codes, not free-text complaints; complaint text is the code's label.",
            "Trained on US EDs (NHAMCS 2018-2019); transfer to other systems needs local evaluation "
            "(see the KTAS external evaluation).",
            *(
                [
                    f"Inputs not used by this model (not recorded in its training data; masked to missing, listed in "
                    f"every response; NEWS2 and the safety floor still use them): "
                    f"{', '.join(trained.encoder.unused_inputs)}."
                ]
                if trained.encoder.unused_inputs
                else []
            ),
        ],
        synthetic_data=synthetic,
    )
