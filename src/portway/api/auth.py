"""Bearer-token authentication: 401 without a token, 403 for one that is not valid."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..control.users import User, Users

# Declares the scheme in the OpenAPI document; the checks are ours (auto_error would answer 403
# for a missing header, where the platform answers 401).
bearer = HTTPBearer(auto_error=False, description="An API token (UKC_TOKEN)")


class AuthError(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def authenticate(
    request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> User:
    header = request.headers.get("authorization")
    if not header:
        raise AuthError(401, "no API token: send 'Authorization: Bearer <token>' (UKC_TOKEN)")
    scheme, _sep, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError(401, "the Authorization header must be 'Bearer <token>'")
    users: Users = request.app.state.users
    user = users.authenticate(token)
    if user is None:
        raise AuthError(403, "the API token is not valid")
    return user
