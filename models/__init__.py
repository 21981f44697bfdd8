"""SQLAlchemy 2 typed models. The schema itself is built only by Alembic migrations."""

from models.base import Base, UtcDateTime
from models.conversations import Conversation
from models.evaluations import CandidateEvaluation
from models.experiments import Experiment, ExperimentAnalysis, ExperimentArm
from models.idempotency import IdempotencyKey
from models.insights import PatternInsight
from models.jobs import FINISHED_STATUSES, JOB_STATUSES, OptimizationJob
from models.llm_calls import LlmCall
from models.pattern_rollups import (
    PatternSegmentUnitHour,
    PatternTagUnitHour,
    PatternUnitHour,
    RollupMark,
)
from models.prompts import Prompt, PromptActivation, PromptVersion
from models.rollups import ExperimentStratumSums, ExperimentUnitSums
from models.routing import RoutingStamp
from models.signatures import UsedSignature
from models.ui_sessions import UiSession

__all__ = [
    "Base",
    "CandidateEvaluation",
    "Conversation",
    "Experiment",
    "ExperimentAnalysis",
    "ExperimentArm",
    "ExperimentStratumSums",
    "ExperimentUnitSums",
    "FINISHED_STATUSES",
    "IdempotencyKey",
    "JOB_STATUSES",
    "LlmCall",
    "OptimizationJob",
    "PatternInsight",
    "PatternSegmentUnitHour",
    "PatternTagUnitHour",
    "PatternUnitHour",
    "Prompt",
    "PromptActivation",
    "PromptVersion",
    "RollupMark",
    "RoutingStamp",
    "UiSession",
    "UsedSignature",
    "UtcDateTime",
]
