"""Speaking with the Xquik API: the client (the one aiohttp user), pure classification of its
answers, one call under the retry policy, the listings, and the session that ties them to a key."""

from worker.api.call import Call, Caller, describe
from worker.api.client import Answer, XquikClient
from worker.api.directory import Directory, tracking, tracks
from worker.api.session import Session, fingerprint

__all__ = [
    "Answer",
    "Call",
    "Caller",
    "Directory",
    "Session",
    "XquikClient",
    "describe",
    "fingerprint",
    "tracking",
    "tracks",
]
