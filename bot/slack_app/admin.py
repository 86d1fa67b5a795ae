"""Who may grant, revoke and set credits: Slack's workspace admins and owners, and configured ids.

Asked of Slack (``users.info``, scope ``users:read``) at the moment of each admin command, so a
demoted admin loses the right at once. Never cached, never taken from the request text.
"""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient


async def is_workspace_admin(client: AsyncWebClient, user_id: str, configured: frozenset[str]) -> bool:
    if user_id in configured:
        return True
    response = await client.users_info(user=user_id)
    user = response.get("user") or {}
    return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))
