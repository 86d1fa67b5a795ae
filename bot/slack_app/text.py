"""Slack's text formats in and out.

In: slash command text arrives HTML-escaped, with mentions, channels and links in angle brackets
(``should_escape``). The prompt a provider sees is the plain text a person typed.
Out: anything a user typed is escaped before it is posted, so a prompt can never ping @channel,
mention someone or become a link.
"""

from __future__ import annotations

import re

_ANGLE = re.compile(r"<([^<>]*)>")


def _plain_token(inner: str) -> str:
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        return "@" + (label or target[1:])
    if target.startswith("#"):
        return "#" + (label or target[1:])
    if target.startswith("!"):
        name = target[1:].split("^", 1)[0]
        return "@" + (label or name).lstrip("@")
    return label or target


def to_plain(text: str) -> str:
    """Slack-formatted text -> what the person typed (``<@U1|ann>`` -> ``@ann``, ``&lt;`` -> ``<``)."""
    text = _ANGLE.sub(lambda m: _plain_token(m.group(1)), text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def escape(text: str) -> str:
    """Text shown verbatim in a Slack message: no mentions, links or @channel from user input."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention(user_id: str) -> str:
    return f"<@{user_id}>"
