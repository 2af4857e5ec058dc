"""Local datastore that refuses ids/tags able to escape the studies folder.

MONAI Label 0.8.5 joins the ``tag`` query parameter straight into a path, so
``PUT /datastore/label?tag=../../x`` writes outside the studies folder. Every id and tag is
checked here (and again by the server middleware, which answers 400 before any work is done)."""
from __future__ import annotations

import re

from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_safe_name(value: str | None) -> bool:
    return value is None or value == "" or (isinstance(value, str) and bool(SAFE_NAME.fullmatch(value)) and ".." not in value)


def check_name(value: str | None, what: str) -> None:
    if not is_safe_name(value):
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT, f"invalid {what} {value!r}: use letters, digits, '.', '_' and '-' only"
        )


class SafeLocalDatastore(LocalDatastore):
    def save_label(self, image_id, label_filename, label_tag, label_info):
        check_name(image_id, "image id")
        check_name(label_tag, "label tag")
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def remove_label(self, label_id, label_tag):
        check_name(label_id, "label id")
        check_name(label_tag, "label tag")
        return super().remove_label(label_id, label_tag)

    def add_image(self, image_id, image_filename, image_info):
        check_name(image_id, "image id")
        return super().add_image(image_id, image_filename, image_info)

    def remove_image(self, image_id):
        check_name(image_id, "image id")
        return super().remove_image(image_id)

    def get_label_uri(self, label_id, label_tag):
        check_name(label_tag, "label tag")
        return super().get_label_uri(label_id, label_tag)

    def update_label_info(self, label_id, label_tag, info):
        check_name(label_tag, "label tag")
        return super().update_label_info(label_id, label_tag, info)
