"""A third-party channel for the tests, loaded through a config's ``plugins_dir``: it appends
every message as a JSON line to the file named by its ``path`` option."""

import json

from escalator.delivery.channels import DeliveryResult, DeliveryStatus
from escalator.hookspecs import hookimpl


class FileChannel:
    type_name = "jsonl_file"
    audience = "person"

    def __init__(self, channel_id, options):
        self.path = options["path"]

    async def send(self, message):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"to": message.address, "name": message.recipient_name,
                                "title": message.title, "body": message.body},
                               ensure_ascii=False) + "\n")
        return DeliveryResult(DeliveryStatus.delivered, "written")


@hookimpl
def register_channels(register):
    register(FileChannel)


@hookimpl
def track_incident(incident_id, entry):
    TRACKED.append((incident_id, entry.type))


TRACKED: list = []
