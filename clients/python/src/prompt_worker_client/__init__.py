"""prompt-worker's client SDK: which prompt version a user gets, evaluated locally from a
cached configuration, and conversations logged in background batches.

    from prompt_worker_client import Client

    client = Client("http://prompt-worker:8081", token, fallback={"support-bot": "You are..."})
    served = client.get_prompt("support-bot", user_id)
    ...  # call the model with served.content
    client.log({**served.log_fields(), "unit_id": user_id, "success": True,
                "messages": [{"role": "user", "content": question},
                             {"role": "assistant", "content": answer}]})
"""

from prompt_worker_client._version import __version__
from prompt_worker_client.async_client import AsyncClient
from prompt_worker_client.config import Arm, ServedPrompt
from prompt_worker_client.errors import (
    ConfigError,
    InvalidUnitId,
    PromptNotFound,
    PromptWorkerClientError,
)
from prompt_worker_client.messages import Message, Role, TextBlock
from prompt_worker_client.stats import Stats
from prompt_worker_client.sync_client import Client

__all__ = [
    "Arm",
    "AsyncClient",
    "Client",
    "ConfigError",
    "InvalidUnitId",
    "Message",
    "PromptNotFound",
    "PromptWorkerClientError",
    "Role",
    "ServedPrompt",
    "Stats",
    "TextBlock",
    "__version__",
]
