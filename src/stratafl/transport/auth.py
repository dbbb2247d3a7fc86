"""Authentication on every gRPC link: a bearer token in, the caller's claims out.

The server side is one interceptor: it reads ``authorization: Bearer <token>`` from the
call's metadata, verifies it, checks the method's roles in `security.policy.GRPC_ROLES`
(a method not in the table is refused), and makes the verified `Claims` available to the
handler through `current_caller()`. Handlers take the caller's identity from there, never
from a field of the request. The client side attaches the token as call credentials,
which gRPC sends only over TLS.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
import grpc.aio

from stratafl.errors import AuthError, PermissionDenied, StrataError
from stratafl.security import Claims, Role
from stratafl.transport.error_codes import status_of

_CALLER: contextvars.ContextVar[Claims | None] = contextvars.ContextVar(
    "stratafl_caller", default=None
)


def current_caller() -> Claims | None:
    """The verified caller of the RPC being handled; None on an insecure (loopback) link."""
    return _CALLER.get()


def bearer(metadata: Any) -> str | None:
    """The token of ``authorization: Bearer <token>`` in a call's metadata, if any."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return None


def check_caller(
    token: str | None, allowed: frozenset[Role] | None, verify: Callable[[str], Claims]
) -> Claims:
    """The caller's claims if ``token`` is valid and its role is in ``allowed``.

    Raises `AuthError` (no or bad credentials) or `PermissionDenied` (wrong role, or a
    method that no role may call).
    """
    if allowed is None:
        raise PermissionDenied("this method is not open to any caller")
    if token is None:
        raise AuthError("no token: send `authorization: Bearer <token>` (strata token create)")
    claims = verify(token)
    if claims.role not in allowed:
        roles = ", ".join(sorted(allowed)) or "none"
        raise PermissionDenied(f"a {claims.role} token may not call this; it needs: {roles}")
    return claims


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Admits a call only with a valid token whose role the method's table entry names."""

    def __init__(
        self, verify: Callable[[str], Claims], roles: Mapping[str, frozenset[Role]]
    ) -> None:
        self._verify = verify
        self._roles = roles

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        try:
            claims: Claims | StrataError = check_caller(
                bearer(handler_call_details.invocation_metadata),
                self._roles.get(handler_call_details.method),
                self._verify,
            )
        except (AuthError, PermissionDenied) as exc:
            claims = exc
        return _with_caller(handler, claims)


def _with_caller(handler: grpc.RpcMethodHandler[Any, Any], caller: Claims | StrataError) -> Any:
    """``handler`` with its behaviour run as ``caller``, or refused with its error.

    (grpc's stubs type method handlers for the blocking server; under grpc.aio their
    behaviours are coroutines and async generators, hence the ``Any``.)
    """

    async def admit(context: grpc.aio.ServicerContext) -> None:
        if isinstance(caller, StrataError):
            await context.abort(status_of(caller), str(caller))
        _CALLER.set(caller)

    if handler.unary_unary is not None:
        inner_uu: Any = handler.unary_unary  # the aio servicer's coroutine

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admit(context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream is not None:
        inner_us: Any = handler.unary_stream  # the aio servicer's coroutine

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            await admit(context)
            async for message in inner_us(request, context):
                yield message

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary is not None:
        inner_su: Any = handler.stream_unary  # the aio servicer's coroutine

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await admit(context)
            return await inner_su(requests, context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, handler.request_deserializer, handler.response_serializer
        )
    inner_ss: Any = handler.stream_stream

    async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await admit(context)
        async for message in inner_ss(requests, context):
            yield message

    return grpc.stream_stream_rpc_method_handler(
        stream_stream, handler.request_deserializer, handler.response_serializer
    )


class TokenAuth(grpc.AuthMetadataPlugin):
    """Call credentials that send the current token (``token()`` is asked on every call,
    so a process can renew its token without reopening its channels)."""

    def __init__(self, token: Callable[[], str]) -> None:
        self._token = token

    def __call__(
        self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback
    ) -> None:
        callback((("authorization", f"Bearer {self._token()}"),), None)
