"""Who may do what: the check of ``spec/platform.md`` §2.4–2.5, apart from where its entries come from.

An access entry grants a level (none < view < edit < manage) on a resource: a service's name, the
group of services ``admin_panel``, the super-group ``server``, ``files`` or one file's id. A
*service check* tries the resources ``[service, its group, "server"]``, a *resource check*
``[type, id]``; the caller passes when any of them grants the level. For each resource the entries
in the caller's token decide when the token has any for it — granted or not, final — and only a
resource the token says nothing about is looked up among the stored entries. So a grant reaches a
resource the token already speaks of only with a new token (a new sign-in): token first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence

from chainloom.domain.identity import SERVER, Grant, Permission

# SERVER (manage there passes every service check) is identity's: every registered user has an entry on it.
ADMIN_PANEL = "admin_panel"  # the group of every service but activity
ACTIVITY_SERVICE = "activityservice"  # its own group

# The stored entries of the caller for one resource (the read model), when the token has none for it.
StoredEntries = Callable[[str], Awaitable[Sequence[Grant]]]


def group_of(service: str) -> str:
    return ACTIVITY_SERVICE if service == ACTIVITY_SERVICE else ADMIN_PANEL


def service_candidates(service: str) -> tuple[str, ...]:
    """The resources a service check tries, in order (a check "of ``server``" — the admin's alone — tries it only)."""
    if service == SERVER:
        return (SERVER,)
    return tuple(dict.fromkeys((service, group_of(service), SERVER)))  # activity is its own group: tried once


def resource_candidates(resource_type: str, resource_id: str) -> tuple[str, ...]:
    return (resource_type, resource_id)


def verdict(entries: Iterable[Grant], resource: str, level: Permission) -> bool | None:
    """Whether ``entries`` grant ``level`` on ``resource``; None when none of them is about it."""
    about = [entry.permission for entry in entries if entry.resource == resource]
    if not about:
        return None
    return max(about) >= level


async def authorized(
    token_entries: Sequence[Grant], candidates: Sequence[str], level: Permission, stored: StoredEntries
) -> bool:
    """Whether any candidate resource grants ``level``: by the token's entries where it has some, else by the
    stored ones. The token's verdicts are looked at first (the answer is the same: any candidate suffices),
    so a caller whose token decides — ``server`` manage, say — costs no look-up."""
    unspoken = []
    for resource in candidates:
        said = verdict(token_entries, resource, level)
        if said:
            return True
        if said is None:
            unspoken.append(resource)
    for resource in unspoken:
        if verdict(await stored(resource), resource, level):
            return True
    return False
