"""The combiner's link to the controller, kept alive for the combiner's whole life.

It registers the combiner, heartbeats once a second, and reports clients coming and
going. When the controller goes away it finds it again on its own: a restarted controller
may serve gRPC on another port (``--grpc-port 0``), so the combiner asks ``/discovery``
over REST again instead of trusting the address it had, enrols anew if the controller's
trust changed, and registers again. Every retry waits with jittered backoff, so a fleet
of combiners does not hammer a controller that is coming back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import replace

import grpc
import grpc.aio

from stratafl.combiner.enrolment import (
    Enrolment,
    EnrolmentPlan,
    ServingTrust,
    enrol_when_reachable,
    wait_or_stop,
)
from stratafl.combiner.registry import ClientRegistry
from stratafl.errors import StrataError
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.security.renewal import renewal_due
from stratafl.transport.backoff import Backoff
from stratafl.transport.channels import open_aio_channel

log = logging.getLogger("stratafl.combiner")

HEARTBEAT_SECONDS = 1.0
HEARTBEAT_TIMEOUT_SECONDS = 5.0
REGISTER_TIMEOUT_SECONDS = 10.0
BACKOFF_BASE_SECONDS = 0.2
BACKOFF_CAP_SECONDS = 5.0


class ControllerUplink:
    """Registration, heartbeats and client events towards the controller; constructing
    it starts nothing (`run` does)."""

    def __init__(
        self,
        plan: EnrolmentPlan,
        enrolment: Enrolment,
        *,
        trust: ServingTrust | None,
        max_clients: int,
        backoff: Backoff | None = None,
    ) -> None:
        self._plan = plan
        self.enrolment = enrolment
        self._trust = trust
        self._max_clients = max_clients
        self._backoff = backoff or Backoff(BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS)
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.ControllerStub | None = None
        self._background: set[asyncio.Task[object]] = set()
        self.address = ""
        """What this combiner registers as its own address (set by `start`)."""

    @property
    def stub(self) -> pb_grpc.ControllerStub:
        """The controller's stub of the moment (a new one after the controller moved)."""
        if self._stub is None:
            self._stub = pb_grpc.ControllerStub(self._open())
        return self._stub

    def _open(self) -> grpc.aio.Channel:
        credentials = self.enrolment.dialing.channel_credentials()
        self._channel = open_aio_channel(self.enrolment.grpc_address, credentials=credentials)
        return self._channel

    def report_client(self, client_id: str, connected: bool) -> None:
        """Tell the controller a client came or went, without waiting for the answer (a
        lost event is repaired by the next heartbeat, which lists every client)."""
        event = pb.ClientEvent(
            combiner_id=self.enrolment.combiner_id, client_id=client_id, connected=connected
        )
        task = asyncio.ensure_future(self.stub.ReportClientEvent(event, timeout=10))
        self._background.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[object]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("client event not delivered: %s", task.exception())

    async def start(self, address: str, stop: asyncio.Event) -> bool:
        """Register as serving at ``address``, retrying until it works; False if stopped."""
        self.address = address
        while not stop.is_set():
            if await self._register():
                return True
            await self._rediscover(stop)
        return False

    async def run(self, registry: ClientRegistry, stop: asyncio.Event) -> None:
        """Heartbeat ``registry``'s clients until ``stop``; find the controller again
        whenever it is lost, and end the streams of clients whose token was revoked."""
        while not stop.is_set():
            try:
                ack = await self.stub.Heartbeat(
                    pb.CombinerHeartbeat(
                        combiner_id=self.enrolment.combiner_id, client_ids=registry.ids()
                    ),
                    timeout=HEARTBEAT_TIMEOUT_SECONDS,
                )
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "lost the controller at %s (%s); looking it up again",
                    self.enrolment.grpc_address,
                    exc.code().name,
                )
                await self._rediscover(stop)  # the next heartbeat says if it knows us
                continue
            self._backoff.reset()
            self._revoke(ack.revoked_token_ids, registry)
            await self._renew_token()
            if not ack.ok:  # a restarted controller: it does not know us yet
                log.info("the controller does not know this combiner; registering again")
                if not await self.start(self.address, stop):
                    return
                continue
            await wait_or_stop(stop, HEARTBEAT_SECONDS)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None

    async def _register(self) -> bool:
        info = pb.CombinerInfo(
            combiner_id=self.enrolment.combiner_id,
            address=self.address,
            max_clients=self._max_clients,
        )
        try:
            await self.stub.RegisterCombiner(info, timeout=REGISTER_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "cannot register with the controller at %s (%s: %s)",
                self.enrolment.grpc_address,
                exc.code().name,
                exc.details(),
            )
            return False
        log.info(
            "combiner %s registered at %s with the controller at %s",
            self.enrolment.combiner_id,
            self.address,
            self.enrolment.grpc_address,
        )
        return True

    async def _rediscover(self, stop: asyncio.Event) -> None:
        """Wait (jittered backoff), then ask ``/discovery`` where the controller is now,
        enrolling anew if its trust changed; open a new channel to it."""
        await wait_or_stop(stop, self._backoff.next_delay())
        current = self.enrolment
        enrolment = await enrol_when_reachable(
            lambda: self._plan.enrol(current), stop, self._backoff, retry_refusals=True
        )
        if enrolment is None:
            return
        if self._trust is not None and enrolment.identity is not current.identity:
            log.warning("the controller's trust changed: enrolled again for a new certificate")
            self._trust.update(enrolment)
        self.enrolment = enrolment
        old = self._channel
        self._channel, self._stub = None, None
        if old is not None:
            await old.close()

    async def _renew_token(self) -> None:
        """Past half its life, exchange this combiner's token for a fresh copy and dial
        with it from now on; a refusal keeps the old one (still valid) and is retried at
        the next heartbeat."""
        dialing = self.enrolment.dialing
        if dialing.token is None or not renewal_due(dialing.token):
            return
        try:
            renewed = await asyncio.to_thread(self._plan.renew, dialing)
        except StrataError as exc:
            log.warning("cannot renew this combiner's token yet (%s)", exc)
            return
        log.info("renewed this combiner's token")
        self.enrolment = replace(self.enrolment, dialing=renewed)
        old = self._channel
        self._channel, self._stub = None, None
        if old is not None:
            await old.close(grace=HEARTBEAT_TIMEOUT_SECONDS)

    def _revoke(self, token_ids: Iterable[str], registry: ClientRegistry) -> None:
        """Refuse revoked tokens from now on, and end the streams opened with them."""
        if self._trust is None:
            return
        revoked = list(token_ids)
        self._trust.set_revoked(revoked)
        for client_id in registry.end_revoked(set(revoked)):
            log.warning("ended the stream of %s: its token was revoked", client_id)
