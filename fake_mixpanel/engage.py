"""The fake's Engage (Query) API: profiles by data group, and paging sessions over snapshots of the matches.

Mixpanel's documented contract: `POST /api/query/engage`, form-encoded fields, page 0 answers with a
`session_id`; pages above 0 need it and hold up to `page_size` results. What the fake adds where Mixpanel
documents nothing (guesses, kept harsh for the client):
- page 0 always starts a new session, whatever session_id it carries;
- a session is a snapshot: the ordered matches of page 0, as they were then (content included), so later
  edits, additions and deletions show only in a new session; pages above 0 do not read `where` or filters again;
- a session expires `session_ttl_ms` after its page 0 on the fake's clock, or at FakeMixpanel.expire_sessions();
- error texts (ERR_*) are guesses, answered as JSON `{"error": ..., "status": "error"}`;
- `include_all_users` is checked but changes nothing: cohort members here always have a profile;
- `behaviors` / `as_of_timestamp` are refused (400): the fake has no event selectors;
- profiles are stored by their distinct_id as given (4 and "4" are two profiles), but `distinct_ids` /
  `distinct_id` filters compare as strings, so `[4]` and `["4"]` both find profile 4.

Faults (FakeMixpanel.inject / inject_when with path=ENGAGE_PATH; Engage requests are numbered from 1 apart
from the export's, whose numbering and faults they never touch): `status`, `slow` and `drop` act as on the
export; `cut_off` cuts a page's JSON (hanging up short of the announced Content-Length, or with
`consistent_length` as a complete shorter answer); `bad_json` splices `corrupt_line` into the middle of the
page; `terminated_early` does not apply. Body faults never touch error answers (the record's fault stays None).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import Message
from io import BufferedIOBase
from typing import Any
from urllib.parse import parse_qsl

from .profiles import DistinctId, FakeProfile, mixpanel_time
from .where import WhereError, compile_where

ENGAGE_PATH = "/api/query/engage"
DEFAULT_PAGE_SIZE = 1000
DEFAULT_SESSION_TTL_MS = 3_600_000  # undocumented by Mixpanel: a guess

ERR_SESSION_INVALID = "session_id {session_id} is invalid or has expired"  # Mixpanel's text is undocumented
ERR_SESSION_REQUIRED = "session_id is required when page is above 0"
ERR_INVALID_PAGE = "page must be a non-negative integer"
ERR_INVALID_PARAM = "{param} must be {shape}"
ERR_INVALID_WHERE = "invalid where expression: {reason}"
ERR_UNSUPPORTED = "{param} is not supported by the fake"


class EngageError(Exception):
    """An Engage request the fake refuses, with the status and JSON body to answer."""

    def __init__(self, status: int, message: str) -> None:
        """Keep the status and message."""
        super().__init__(message)
        self.status = status
        self.body = json.dumps({"error": message, "status": "error"}, ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class _Session:
    """The matches of one page 0, fixed, with the fake-clock time it was made."""

    created_ms: int
    matches: tuple[FakeProfile, ...]


@dataclass(frozen=True)
class _Query:
    """The parsed fields of one Engage request."""

    page: int
    session_id: str | None
    output_properties: frozenset[str] | None
    where: str | None
    cohort: int | None
    data_group_id: str | None
    distinct_ids: frozenset[str] | None  # compared as strings, so 4 and "4" name the same profile


def read_form(headers: Message, rfile: BufferedIOBase) -> dict[str, str]:
    """Read a request body by its Content-Length and give its fields when it is form-encoded (else none)."""
    try:
        length = int(headers.get("Content-Length") or 0)
    except ValueError:
        length = 0
    body = rfile.read(length) if length > 0 else b""
    if not (headers.get("Content-Type") or "").lower().startswith("application/x-www-form-urlencoded"):
        return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


class ProfileStore:
    """User profiles and group profiles (by data_group_id), and the sessions paging over them; thread-safe."""

    def __init__(self) -> None:
        """Start empty."""
        self._lock = threading.Lock()
        self._groups: dict[str | None, dict[DistinctId, FakeProfile]] = {None: {}}
        self._sessions: dict[str, _Session] = {}
        self._made = 0

    # -- data ---------------------------------------------------------------------------------------------------

    def add(self, profiles: Iterable[FakeProfile], data_group_id: str | None = None) -> None:
        """Store profiles (a profile with a stored distinct_id replaces it in place)."""
        with self._lock:
            group = self._groups.setdefault(data_group_id, {})
            for profile in profiles:
                group[profile.distinct_id] = profile

    def snapshot(self, data_group_id: str | None = None) -> tuple[FakeProfile, ...]:
        """The stored profiles of one data group (None: user profiles), in serving order."""
        with self._lock:
            return tuple(self._groups.get(data_group_id, {}).values())

    def update(
        self, distinct_id: DistinctId, properties: Mapping[str, Any], now_ms: int | None, data_group_id: str | None
    ) -> FakeProfile:
        """Set properties ($set; a new profile if none) and, when now_ms is given, `$last_seen` to it."""
        changes = dict(properties)
        if now_ms is not None:
            changes["$last_seen"] = mixpanel_time(now_ms)
        with self._lock:
            group = self._groups.setdefault(data_group_id, {})
            old = group.get(distinct_id)
            if old is None:
                profile = FakeProfile(distinct_id, changes)
            else:
                profile = FakeProfile(distinct_id, {**old.properties, **changes}, old.cohorts)
            group[distinct_id] = profile
            return profile

    def delete(self, distinct_id: DistinctId, data_group_id: str | None = None) -> None:
        """Delete a profile; later sessions no longer find it (KeyError when there is none)."""
        with self._lock:
            del self._groups.get(data_group_id, {})[distinct_id]

    def expire_sessions(self) -> None:
        """Forget every session, as if each had outlived its TTL."""
        with self._lock:
            self._sessions.clear()

    # -- the endpoint ---------------------------------------------------------------------------------------

    def answer(self, params: Mapping[str, str], *, now_ms: int, page_size: int, session_ttl_ms: int) -> bytes:
        """Answer one Engage request with its JSON body, or raise EngageError."""
        query = _parse(params)
        if query.page == 0:
            session_id, session = self._open(query, now_ms)
        else:
            if not query.session_id:
                raise EngageError(400, ERR_SESSION_REQUIRED)
            session_id, session = query.session_id, self._find(query.session_id, now_ms, session_ttl_ms)
        chunk = session.matches[query.page * page_size : (query.page + 1) * page_size]
        results = b",".join(profile.render(query.output_properties) for profile in chunk)
        return b'{"page":%d,"page_size":%d,"results":[%b],"session_id":%b,"status":"ok","total":%d}' % (
            query.page,
            page_size,
            results,
            json.dumps(session_id).encode("utf-8"),
            len(session.matches),
        )

    def _open(self, query: _Query, now_ms: int) -> tuple[str, _Session]:
        """Evaluate the query on the profiles as they are now and keep the matches under a new session id."""
        try:
            predicate = compile_where(query.where, string_dates=True) if query.where else None
        except WhereError as exc:
            raise EngageError(400, ERR_INVALID_WHERE.format(reason=exc)) from None
        with self._lock:
            profiles = list(self._groups.get(query.data_group_id, {}).values())
        matches = tuple(
            profile
            for profile in profiles
            if (query.distinct_ids is None or str(profile.distinct_id) in query.distinct_ids)
            and (query.cohort is None or query.cohort in profile.cohorts)
            and (predicate is None or predicate(profile.get))
        )
        session = _Session(now_ms, matches)
        with self._lock:
            self._made += 1
            session_id = f"{now_ms // 1000}-FAKE{self._made:06d}"
            self._sessions[session_id] = session
        return session_id, session

    def _find(self, session_id: str, now_ms: int, session_ttl_ms: int) -> _Session:
        """The live session of that id, or EngageError when unknown or expired (an expired one is dropped)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and now_ms - session.created_ms > session_ttl_ms:
                del self._sessions[session_id]
                session = None
        if session is None:
            raise EngageError(400, ERR_SESSION_INVALID.format(session_id=session_id))
        return session


def _parse(params: Mapping[str, str]) -> _Query:
    """Check and parse the Engage fields (query string and form body merged)."""
    for unsupported in ("behaviors", "as_of_timestamp"):
        if params.get(unsupported):
            raise EngageError(400, ERR_UNSUPPORTED.format(param=unsupported))
    raw_page = params.get("page") or "0"
    if not (raw_page.isascii() and raw_page.isdigit()):
        raise EngageError(400, ERR_INVALID_PAGE)
    names = _json_param(params, "output_properties", "a JSON array of property names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise EngageError(400, ERR_INVALID_PARAM.format(param="output_properties", shape="a JSON array of names"))
    cohort = _json_param(params, "filter_by_cohort", 'a JSON object like {"id": 12345}')
    if cohort is not None:
        cohort_id = cohort.get("id") if isinstance(cohort, dict) else None
        if not isinstance(cohort_id, int) or isinstance(cohort_id, bool):
            raise EngageError(400, ERR_INVALID_PARAM.format(param="filter_by_cohort", shape='like {"id": 12345}'))
        cohort = cohort_id
    if params.get("include_all_users", "true").lower() not in ("true", "false"):
        raise EngageError(400, ERR_INVALID_PARAM.format(param="include_all_users", shape="true or false"))
    ids = _json_param(params, "distinct_ids", "a JSON array of distinct_ids")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str | int) for i in ids)):
        raise EngageError(400, ERR_INVALID_PARAM.format(param="distinct_ids", shape="a JSON array of distinct_ids"))
    if params.get("distinct_id"):
        ids = [*(ids or []), params["distinct_id"]]
    return _Query(
        page=int(raw_page),
        session_id=params.get("session_id") or None,
        output_properties=None if names is None else frozenset(names),
        where=params.get("where") or None,
        cohort=cohort,
        data_group_id=params.get("data_group_id") or None,
        distinct_ids=None if ids is None else frozenset(str(i) for i in ids),
    )


def _json_param(params: Mapping[str, str], name: str, shape: str) -> Any:
    """Decode a JSON-valued field (None when absent or empty)."""
    raw = params.get(name)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise EngageError(400, ERR_INVALID_PARAM.format(param=name, shape=shape)) from None
