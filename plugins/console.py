"""The console channel: prints each rendered notification to standard output.

Audience ``person``. Options: ``stream`` (``stdout`` default, or ``stderr``).
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.hookspecs import hookimpl


class ConsoleChannel:
    """Prints ``title``, recipient and ``body`` as one block; always ``delivered``."""

    type_name: ClassVar[str] = "console"
    audience: ClassVar[str] = "person"

    def __init__(self, channel_id: str, options: dict[str, Any]) -> None:
        stream = options.get("stream", "stdout")
        if stream not in ("stdout", "stderr"):
            raise ValueError("option stream: must be 'stdout' or 'stderr'")
        self.channel_id = channel_id
        self.stream_name = stream

    async def send(self, message: Message) -> DeliveryResult:
        stream = sys.stdout if self.stream_name == "stdout" else sys.stderr
        rule = "─" * 48
        stream.write(
            f"{rule}\n→ {message.recipient_name} <{message.address}>  [{self.channel_id}]\n"
            f"{message.title}\n{message.body}\n"
        )
        stream.flush()
        return DeliveryResult(DeliveryStatus.delivered)


@hookimpl
def register_channels(register):
    register(ConsoleChannel)
