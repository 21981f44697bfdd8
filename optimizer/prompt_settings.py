"""A prompt's own settings: its promotion mode (auto, approve, or NULL to follow the
PROMOTION_MODE setting) and the judge rubric the replay judge adds for its candidates.

One model (`PromptSettingsBody`) checks what POST /prompts/{name}/settings and `prompt-worker
prompts settings` send; a key left out keeps its value. Functions take a Session and flush;
callers own the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.prompts import Prompt
from optimizer import prompt_text, prompts
from optimizer.config import PromotionMode
from optimizer.errors import InvalidInput, NotFound
from optimizer.input_models import InputModel, validate

# Said instead of null on the command line (and accepted over HTTP): follow PROMOTION_MODE.
INHERIT = "inherit"
MAX_RUBRIC_CHARS = 10_000
SETTING_NAMES = ("promotion_mode", "judge_rubric")


def _not_blank(rubric: str | None) -> str | None:
    if rubric is not None and not rubric.strip():
        raise ValueError("is blank; send null to remove the rubric")
    return rubric


class PromptSettingsBody(InputModel):
    """The body of POST /prompts/{name}/settings: only the keys given change."""

    promotion_mode: Literal["auto", "approve", "inherit"] | None = Field(
        None,
        description="approve: a winning variant waits for a person's approval; auto: it "
        "becomes active at once; null or inherit: follow the PROMOTION_MODE setting",
    )
    judge_rubric: Annotated[
        str | None, Field(max_length=MAX_RUBRIC_CHARS), AfterValidator(_not_blank)
    ] = Field(
        None,
        description=f"extra criteria the replay judge applies to this prompt's candidates, "
        f"at most {MAX_RUBRIC_CHARS:,} characters; null removes it",
    )


@dataclass(frozen=True)
class PromptSettings:
    prompt: str
    promotion_mode: PromotionMode | None  # the prompt's own; None follows the setting
    effective_promotion_mode: PromotionMode
    judge_rubric: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "promotion_mode": self.promotion_mode,
            "effective_promotion_mode": self.effective_promotion_mode,
            "judge_rubric": self.judge_rubric,
        }


def effective_mode(own: str | None, default: PromotionMode) -> PromotionMode:
    """The mode a prompt's winners follow: its own, else the service's."""
    return _stored_mode(own) or default


def _stored_mode(value: str | None) -> PromotionMode | None:
    # The database allows only these; anything else read counts as the stricter mode.
    if value is None:
        return None
    return "auto" if value == "auto" else "approve"


def _row(session: Session, name: Any) -> Prompt:
    name = prompt_text.validate_name(name)
    prompt = session.scalars(select(Prompt).where(Prompt.name == name)).one_or_none()
    if prompt is None:
        raise NotFound(
            f"no prompt named {name!r}; create it with POST /prompts or "
            "`prompt-worker prompts add NAME --file F`"
        )
    return prompt


def _view(prompt: Prompt, default: PromotionMode) -> PromptSettings:
    return PromptSettings(
        prompt.name,
        _stored_mode(prompt.promotion_mode),
        effective_mode(prompt.promotion_mode, default),
        prompt.judge_rubric,
    )


def get_settings(session: Session, name: Any, default: PromotionMode) -> PromptSettings:
    """`default`: the PROMOTION_MODE setting."""
    return _view(_row(session, name), default)


def update_settings(
    session: Session, name: Any, body: PromptSettingsBody, default: PromotionMode
) -> PromptSettings:
    """Change the settings `body` names (its keys given, null included); the others stay."""
    given = body.model_fields_set
    if not given:
        raise InvalidInput(
            f"name a setting to change: {' and/or '.join(SETTING_NAMES)} "
            "(GET /prompts/{name} shows the current ones)"
        )
    prompt = _row(session, name)
    prompts.lock_prompt(session, prompt.id)  # a monitoring check reads the mode under it
    if "promotion_mode" in given:
        mode = body.promotion_mode
        prompt.promotion_mode = None if mode in (None, INHERIT) else mode
    if "judge_rubric" in given:
        prompt.judge_rubric = body.judge_rubric
    session.flush()
    return _view(prompt, default)


def parse_body(data: dict[str, Any]) -> PromptSettingsBody:
    """`data` (the CLI's options as the HTTP body they stand for) as the body model."""
    return validate(PromptSettingsBody, data)


def document_with_settings(session: Session, name: Any, default: PromotionMode) -> dict[str, Any]:
    """The prompt as GET /prompts/{name} answers it: prompts.prompt_document plus
    `settings`."""
    document = prompts.prompt_document(session, name)
    document["settings"] = get_settings(session, name, default).to_dict()
    return document
