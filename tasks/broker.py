"""A Redis transport that never holds a message only in a socket.

kombu's Redis transport takes a message with ``BRPOP`` and records it as unacked (the
hash that ``visibility_timeout`` redelivers from) in a second round trip. Between the
two, the message exists only in the worker's socket buffer or the bytes it just
parsed: a worker killed there (SIGKILL, OOM) loses it for good. The window is short
but real, and it widens while prefetch is exhausted, because kombu then leaves a
``BRPOP`` reply unread until a slot frees. The soak lost two item batches this way.

This transport takes a message and records it as unacked in one Lua script, so
Redis always holds it either in its queue or in the unacked hash, in exactly the
format kombu's own ``QoS.append`` writes; kombu's ``restore_visible`` then brings it
back after ``visibility_timeout``, as for any unacked message. Acks, rejects,
requeues, priorities, fair queue rotation and restores stay kombu's.

A script cannot block, so an idle consumer waits on a *doorbell* instead: producers
using this transport push a token next to every message, and the consumer's
``BRPOP`` on the tokens returns as soon as one arrives, or after ``brpop_timeout``
(the ``polling_interval``). The tokens are hints, never work: losing one costs at
most that timeout, and messages sent by producers on kombu's plain transport are
taken the same way, only up to a timeout later. The wire format is kombu's, so
plain kombu producers and consumers interoperate.

Both sides use it: the worker app (``worker.app``) and the producer client
(``tasks.client.BillingClient``) select it with ``transport_for`` whenever the broker URL
is ``redis://`` or ``rediss://``. It needs only kombu, so producers still need nothing
but Celery.
"""

from __future__ import annotations

from collections.abc import Callable
from queue import Empty
from time import monotonic, time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

DOORBELL_PREFIX = "_billing.doorbell."
DOORBELL_TOKENS = 16
"""Tokens kept per queue: enough to wake every idle consumer of a burst."""

# KEYS[1] the unacked hash, KEYS[2] its index, KEYS[3..] the queues in polling order.
# ARGV[1] the time now, ARGV[i] for i >= 2: "1" when KEYS[i + 1] is consumed without
# acks (nothing to record then, as kombu's QoS.append is skipped for it too).
TAKE_SCRIPT = """
for i = 3, #KEYS do
  local raw = redis.call('RPOP', KEYS[i])
  if raw then
    if ARGV[i - 1] ~= '1' then
      local ok, message = pcall(cjson.decode, raw)
      if ok and type(message) == 'table' and type(message.properties) == 'table'
          and message.properties.delivery_tag then
        local info = message.properties.delivery_info
        if type(info) ~= 'table' then info = {} end
        local tag = message.properties.delivery_tag
        redis.call('HSET', KEYS[1], tag, '[' .. raw .. ',' ..
          cjson.encode(info.exchange or '') .. ',' .. cjson.encode(info.routing_key or '') .. ']')
        redis.call('ZADD', KEYS[2], ARGV[1], tag)
      end
    end
    return {KEYS[i], raw}
  end
end
return false
"""


def transport_for(broker_url: str) -> str | None:
    """The ``broker_transport`` setting for a broker URL: this transport for Redis, else
    Celery's choice from the URL's scheme."""
    return "tasks.broker:Transport" if broker_url.split("://", 1)[0] in ("redis", "rediss") else None


def doorbell(queue: str) -> str:
    return DOORBELL_PREFIX + queue


class Channel(kombu_redis.Channel):
    """Takes messages atomically; waits on doorbells when its queues are empty."""

    # kombu's internals this channel drives, which kombu's type stubs leave out (pyproject
    # bounds kombu to the minor they are tested on). Annotations only: kombu's own stay in force.
    connection_errors: tuple[type[BaseException], ...]
    _queue_cycle: Any
    _expires: dict[str, int]
    _q_for_pri: Callable[[str, int], str]
    _flush_brpop_reauth: Callable[[], None]
    _create_client: Callable[[], Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("broker_transport_options.global_keyprefix: not supported by tasks.broker")
        self._no_ack_queues: set[str] = set()
        self._waiting = False
        """True when the next poll waits on the doorbells instead of taking."""
        self._put_client: Any = None
        """Sends messages: a client over the channel's connection pool, not over the
        connection the consumer polls on."""

    # -- consuming ---------------------------------------------------------

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _brpop_start(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        if self._waiting:
            command: list[Any] = ["BRPOP", *(doorbell(queue) for queue in queues), timeout or 0]
        else:
            ordered = [
                (queue, self._q_for_pri(queue, pri)) for pri in self.priority_steps for queue in queues
            ]
            flags = ["1" if queue in self._no_ack_queues else "0" for queue, _ in ordered]
            command = [
                "EVAL",
                TAKE_SCRIPT,
                2 + len(ordered),
                self.unacked_key,
                self.unacked_index_key,
                *(key for _, key in ordered),
                repr(time()),
                *flags,
            ]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                # ``_waiting`` only changes here, so it still tells what _brpop_start sent
                sent = "BRPOP" if self._waiting else "EVAL"
                reply = self.client.parse_response(self.client.connection, sent, **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if sent == "BRPOP":
                # woken by a token, or the wait timed out: either way, look again
                self._waiting = False
                raise Empty()
            if not reply:
                self._waiting = True
                raise Empty()
            dest, item = reply
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            self.connection._deliver(loads(bytes_to_str(item)), dest)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    # -- producing ---------------------------------------------------------

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """kombu's ``_put`` plus a doorbell token, in the same transaction."""
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        expires = self._expires.get(queue) if self._expires else None
        batch = kwargs.get("_publish_batch")
        commands: list[tuple[Any, ...]] = [("lpush", key, dumps(message))]
        if expires is not None:
            commands += [("pexpire", self._q_for_pri(queue, p), expires) for p in self.priority_steps]
        commands += [("lpush", doorbell(queue), "1"), ("ltrim", doorbell(queue), 0, DOORBELL_TOKENS - 1)]
        if batch is not None:
            for name, *args in commands:
                batch.add(name, *args)
            return
        # kombu makes a client per message; one per channel (and connection pool) will do
        if self._put_client is None or self._put_client.connection_pool is not self.pool:
            self._put_client = self._create_client()
        with self._put_client.pipeline() as pipe:
            for name, *args in commands:
                getattr(pipe, name)(*args)
            pipe.execute()


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # kombu takes ``polling_interval`` as the BRPOP timeout and, outside an event
        # loop, also sleeps that long after every empty poll. Here every empty poll is
        # followed by a blocking wait on the doorbells, so the sleep would only delay a
        # message that rang.
        self.polling_interval = None
