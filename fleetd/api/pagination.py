"""Page tokens of fleet's v1 API (pure): base64 (URL-safe, padded) of two little-endian uint16, limit then
page. Page ``p`` of a list holds items ``[(p-1)*limit, p*limit)``; a full page carries the next token."""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["PageToken", "TokenError", "page_of", "parse_tokens"]

T = TypeVar("T")
_FORMAT = "<HH"


class TokenError(ValueError):
    """A page token that cannot be used; the message is the one fleet answers with."""


@dataclass(frozen=True, slots=True)
class PageToken:
    limit: int
    page: int

    def encode(self) -> str:
        return base64.urlsafe_b64encode(struct.pack(_FORMAT, self.limit, self.page)).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> PageToken:
        try:
            data = base64.urlsafe_b64decode(text.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise TokenError(f"illegal base64 data: {exc}") from None
        if len(data) < struct.calcsize(_FORMAT):
            raise TokenError("unexpected EOF" if data else "EOF")
        limit, page = struct.unpack_from(_FORMAT, data)
        return cls(limit, page)


def parse_tokens(values: Sequence[str], limit: int) -> PageToken:
    """The token of a request's ``nextPageToken`` values (the first page when there is none)."""
    if not values:
        return PageToken(limit, 1)
    if len(values) > 1:
        raise TokenError("too many values for page token")
    token = PageToken.decode(values[0])
    if token.limit != limit:
        raise TokenError(f"token limit must be {limit}")
    if token.page == 0:
        raise TokenError("token page must be greater than zero")
    return token


def page_of(items: Sequence[T], token: PageToken) -> tuple[Sequence[T], PageToken | None]:
    """The items of ``token``'s page, and the next page's token when this page is full."""
    start = (token.page - 1) * token.limit
    page = items[start:start + token.limit]
    following = PageToken(token.limit, token.page + 1) if len(page) == token.limit else None
    return page, following
