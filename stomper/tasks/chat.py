"""A chat model (any OpenAI-compatible endpoint) as the agent of tasks.

The model sees no tree: the job shows it the files of the task in the prompt
(:func:`stomper.tasks.prompt.task_prompt`), and it answers with SEARCH/REPLACE blocks
(:data:`stomper.agents.edits.ANSWER_FORMAT`; an empty SEARCH part creates a file). The
blocks are applied strictly to the attempt's tree, all or none; what they changed is then
read from the tree and judged like any agent's work (the scope check, ruff, ``verify``).
An answer that does not apply is a failed attempt whose feedback says why.
"""

from __future__ import annotations

from pathlib import Path

from stomper.agents import AgentOutcome, edits
from stomper.agents.openai_chat import OpenAIChatAgent
from stomper.tasks.prompt import SYSTEM


class ChatTaskAgent:
    """Works a task by asking ``chat`` once per attempt and applying its edits."""

    sees_tree = False
    reports_tokens = True
    answer_format: str | None = edits.ANSWER_FORMAT

    def __init__(self, chat: OpenAIChatAgent) -> None:
        self.chat = chat
        self.name = chat.name

    @property
    def model(self) -> str:
        return self.chat.model

    async def work(self, workspace: Path, prompt: str, *, file: str) -> AgentOutcome:
        """One attempt: one answer, its blocks applied to the tree at ``workspace`` (a
        block that names no file edits ``file``)."""
        answer = await self.chat.ask(SYSTEM, prompt)
        return await self.chat.apply(answer, workspace, file)

    async def ready(self) -> None:
        await self.chat.ready()

    async def aclose(self) -> None:
        await self.chat.aclose()
