"""Telling the administrators that the store is gone, without the store.

When the database (or its WAL file) is deleted or replaced under the daemon, the outbox cannot
be written, so this message goes straight through the channels: each administrator
(``config.administrators``) by their contact methods in order until one takes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from escalator.config.models import Config
from escalator.delivery.channels import DeliveryStatus, Message
from escalator.delivery.pipeline import send
from escalator.engine.targets import UnknownTarget, parse_target, resolve

log = structlog.get_logger("escalator.service.store_alarm")

TITLE = "escalator 数据库不可用 / database unavailable"
BODY = ("escalator 的数据库文件被删除或替换，已停止接收新事件和发送通知。已确认的数据已保留，"
        "请立即检查服务器并重启服务。\n"
        "The escalator database file was deleted or replaced: new events are refused and no "
        "notifications go out. What was acknowledged is kept; check the server and restart "
        "the service.")


async def tell_administrators(config: Config, channels: Mapping[str, Any], cause: str,
                              at: Any) -> int:
    """Send :data:`TITLE` / :data:`BODY` (and ``cause``) to every administrator through the
    first of their contact methods whose channel delivers it, bypassing the outbox. ``at``:
    the time (UTC) to resolve roles at. Returns how many administrators were reached; never
    raises (failures are logged)."""
    reached = 0
    for text in config.administrators:
        try:
            recipients = resolve(parse_target(text, config), config, class_id=None, grade=None, at=at)
        except UnknownTarget:
            continue
        for r in recipients:
            for contact in r.contacts:
                message = Message(0, 0, contact.channel, contact.to, r.name, TITLE,
                                  f"{BODY}\n({cause})", None)
                result = await send(channels.get(contact.channel), message)
                if result.status == DeliveryStatus.delivered:
                    reached += 1
                    log.warning("administrator_told_store_lost", recipient=r.id,
                                channel=contact.channel)
                    break
                log.error("administrator_not_told_store_lost", recipient=r.id,
                          channel=contact.channel, detail=result.detail)
    return reached
