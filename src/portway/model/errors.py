"""Error codes of the Unikraft Cloud API and the exceptions the domain raises.

Two kinds of failure reach a client, and they travel differently (ukc-api.md §1.5, §1.6):
- a request that is malformed or breaks a rule answers HTTP 400 as a whole (`Invalid`);
- a request that is fine but cannot be done for one of its items answers HTTP 200 and says so
  in that item (`ItemError`: not found, name taken, still attached ...).
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """The API's per-item error codes, in the order the Go SDKs enumerate them."""

    UNKNOWN_ERROR = 0
    NOT_SUPPORTED = 1
    WRONG_METHOD = 2
    NO_API_ENDPOINT = 3
    FAIL_NOT_ALL = 4
    TOO_MANY = 5
    UNKNOWN = 6
    INVALID = 7
    NOT_FOUND = 8
    NO_FREE = 9
    FAILED_OPERATION = 10
    FAILED_WRONG_VM_STATE = 11
    TIMED_OUT = 12
    MISSING_ID = 13
    NOT_ALLOWED = 14
    ATTACHED = 15
    MALFORMED_REQUEST = 16
    NOT_BOTH = 17
    ADD_SERVICE = 18
    QUOTA = 19
    GUEST_MEMORY_TOO_SMALL = 20
    NOT_ATTACHED = 21
    TOO_LONG = 22
    ALREADY_EXISTS = 23
    CANNOT_BE_USED = 24


class PortwayError(Exception):
    """Base of every error the domain raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(PortwayError):
    """The request breaks a rule; answered as HTTP 400 naming the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field


class ItemError(PortwayError):
    """One item of a request could not be done; answered inside an HTTP 200 envelope."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def not_found(noun: str, key: str, value: str) -> ItemError:
    """The not-found item the SDK's `absent` logic relies on: `No <noun> with <key> '<value>'`."""
    return ItemError(ErrorCode.NOT_FOUND, f"No {noun} with {key} '{value}'")
