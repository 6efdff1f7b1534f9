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

import logging
from collections.abc import Callable
from queue import Empty
from time import monotonic, time
from typing import Any

from kombu import Connection
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.exceptions import ResponseError

from tasks.envelope import body_problem, envelope_problem

logger = logging.getLogger("billing.broker")

DOORBELL_PREFIX = "_billing.doorbell."
DOORBELL_TOKENS = 16
"""Tokens kept per queue: enough to wake every idle consumer of a burst."""

PUT_SCRIPT = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
"""
"""KEYS[1] the queue, KEYS[2] its doorbell; ARGV[1] the message, ARGV[2] ``DOORBELL_TOKENS``: a
message and its token in one call (a script, not a MULTI pipeline: redis-py builds a pipeline
object per use, which cost more CPU than the round trip)."""

REFUSED_KEY = "_billing.refused"
"""Entries the transport would not deliver, each ``seq\\nqueue\\nreason\\nraw``, until the worker
records them (``worker.quarantine``); nothing is taken off it before its record is committed."""
REFUSED_SEQ_KEY = "_billing.refused.seq"

# KEYS[1] the unacked hash, KEYS[2] its index, KEYS[3] the refused list, KEYS[4] its sequence,
# KEYS[5..] the queues in polling order. ARGV[1] the time now, ARGV[2] "1" when entries are
# checked (``check_entries``), ARGV[i] for i >= 3: "1" when KEYS[i + 2] is consumed without
# acks (nothing to record then, as kombu's QoS.append is skipped for it too).
# Returns {queue, entry, tag}: the tag the entry is unacked under; "" when consumed without
# acks; false when it has no string delivery tag to be acknowledged by, so nothing records
# it: checked, it is then moved to the refused list instead of being handed on. Checked, an entry
# whose tag is already unacked is refused the same way: a second record under that tag would
# replace the first message's, and its ack would remove both (kombu's tags are uuid4s, and a
# restore removes the record in the step that requeues it, so only a forged copy meets one).
# The entry is read first and popped last: under maxmemory the first write fails, and the
# script stops with the entry still queued (Redis keeps a failed script's earlier writes).
TAKE_SCRIPT = """
for i = 5, #KEYS do
  local raw = redis.call('LINDEX', KEYS[i], -1)
  if raw then
    local tag = ''
    if ARGV[i - 2] ~= '1' then
      local ok, message = pcall(cjson.decode, raw)
      tag = false
      if ok and type(message) == 'table' and type(message.properties) == 'table' then
        tag = message.properties.delivery_tag
      end
      local problem = 'no string properties.delivery_tag (of 1-64 characters)'
      if type(tag) == 'string' and #tag > 0 and #tag <= 64 and ARGV[2] == '1'
          and redis.call('HEXISTS', KEYS[1], tag) == 1 then
        tag = false
        problem = 'properties.delivery_tag is the tag of a message still unacknowledged'
      end
      if type(tag) == 'string' and #tag > 0 and #tag <= 64 then
        local info = message.properties.delivery_info
        if type(info) ~= 'table' then info = {} end
        local exchange, routing_key = info.exchange, info.routing_key
        if type(exchange) ~= 'string' then exchange = '' end
        if type(routing_key) ~= 'string' then routing_key = '' end
        redis.call('HSET', KEYS[1], tag, '[' .. raw .. ',' ..
          cjson.encode(exchange) .. ',' .. cjson.encode(routing_key) .. ']')
        redis.call('ZADD', KEYS[2], ARGV[1], tag)
      else
        tag = false
        if ARGV[2] == '1' then
          local seq = redis.call('INCR', KEYS[4])
          redis.call('LPUSH', KEYS[3], seq .. '\\n' .. KEYS[i] .. '\\n' .. problem .. '\\n' .. raw)
        end
      end
    end
    redis.call('RPOP', KEYS[i])
    return {KEYS[i], raw, tag}
  end
end
return false
"""

# KEYS[1] the refused list, KEYS[2] its sequence, KEYS[3] the unacked hash, KEYS[4] its index.
# ARGV[1] the queue, ARGV[2] why, ARGV[3] the entry, ARGV[4] the tag it is unacked under.
REFUSE_SCRIPT = """
local seq = redis.call('INCR', KEYS[2])
redis.call('LPUSH', KEYS[1], seq .. '\\n' .. ARGV[1] .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[3])
redis.call('HDEL', KEYS[3], ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[4])
return seq
"""


TRANSPORTS = {"redis": "tasks.broker:Transport", "rediss": "tasks.broker:SecureTransport"}
"""The ``broker_transport`` setting for each scheme this transport serves."""

# The broker URL is never rewritten: the transport is chosen by the ``broker_transport`` setting,
# and kombu's alias table gives the connection its URL back (``Connection.as_uri``, which Celery's
# banner and Flower's Broker page read) with the scheme it came with instead of the class path.
Connection.resolve_aliases.update({name: scheme for scheme, name in TRANSPORTS.items()})


class UnsupportedBroker(ValueError):
    """A broker URL whose scheme would run on a transport without this one's no-loss take."""


def transport_for(broker_url: str) -> str | None:
    """The ``broker_transport`` setting for a broker URL: this transport for Redis, else
    Celery's choice from the URL's scheme. A Redis Sentinel URL is refused: kombu's Sentinel
    transport takes a message and records it unacked in two round trips (see above), so a worker
    killed between them loses it; this project does not run on it until it is tested there."""
    scheme = broker_url.split("://", 1)[0].lower()
    if scheme == "sentinel":
        raise UnsupportedBroker(
            "sentinel:// broker URLs are not supported: kombu's Sentinel transport can lose a message"
            " taken by a worker killed mid-take (README: What it guarantees); use redis:// or rediss://"
            " to the current primary"
        )
    return TRANSPORTS.get(scheme)


def doorbell(queue: str) -> str:
    return DOORBELL_PREFIX + queue


class QoS(kombu_redis.QoS):
    """kombu's, except that a broker refusing writes (maxmemory, an ACL) never raises out of an
    ack, a requeue or a restore into the worker's main process (kombu's would stop the worker):
    what could not be written stays unacked, restored after the visibility timeout."""

    def append(self, message: Any, delivery_tag: str) -> None:
        """A message the take script recorded as unacked is only remembered here: kombu's
        ``append`` would write the same record again, in a transaction that Redis refuses under
        maxmemory, and that refusal, raised in the main process, stopped the worker with the
        message taken (found by the maxmemory fault test). Messages taken otherwise (kombu's
        ``basic_get``) are recorded as kombu records them."""
        if delivery_tag == getattr(self.channel, "recorded_tag", None):
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        # Plain commands, not kombu's MULTI: under maxmemory Redis refuses every command queued
        # in a transaction, even those that free memory. HDEL first: an index entry left alone
        # is dropped by the next restore, a hash entry left alone would never be.
        try:
            channel: Any = self.channel  # kombu's Redis channel (its stubs leave conn_or_acquire out)
            with channel.conn_or_acquire() as client:
                client.pipeline(transaction=False).hdel(self.unacked_key, delivery_tag).zrem(
                    self.unacked_index_key, delivery_tag
                ).execute()
        except ResponseError as exc:  # redelivered later; its replay is harmless
            logger.warning("could not acknowledge %s now (the broker refuses writes): %s", delivery_tag, exc)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            try:
                self.restore_by_tag(delivery_tag, leftmost=True)
            except ResponseError as exc:
                logger.warning("could not requeue %s now (the broker refuses writes): %s", delivery_tag, exc)
                virtual.QoS.ack(self, delivery_tag)  # forgotten here, still unacked in Redis
                return
        self.ack(delivery_tag)

    def restore_visible(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().restore_visible(*args, **kwargs)
        except ResponseError as exc:
            logger.warning("could not restore unacked messages now (the broker refuses writes): %s", exc)
            return None


class Channel(kombu_redis.Channel):
    """Takes messages atomically and checks them; waits on doorbells when its queues are empty."""

    QoS = QoS

    from_transport_options = (*kombu_redis.Channel.from_transport_options, "check_entries", "refused_handler")
    check_entries = False
    """Transport option: entries of queues consumed with acks must be Celery task messages
    (``tasks.envelope``); others move to the refused list. The worker sets it."""
    refused_handler: Callable[[Any], None] | None = None
    """Transport option: called with a Redis client after an entry moved to the refused list, to
    record it (the worker sets it: ``worker.quarantine``). Without it entries wait there, never lost."""

    # kombu's internals this channel drives, which kombu's type stubs leave out (pyproject
    # bounds kombu to the minor they are tested on). Annotations only: kombu's own stay in force.
    connection_errors: tuple[type[BaseException], ...]
    _queue_cycle: Any
    _expires: dict[str, int]
    _q_for_pri: Callable[[str, int], str]
    _flush_brpop_reauth: Callable[[], None]
    _fanout_queues: dict[str, Any]
    _create_client: Callable[[], Any]
    _get_publish_topics: Callable[[str, str], list[str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("broker_transport_options.global_keyprefix: not supported by tasks.broker")
        self._no_ack_queues: set[str] = set()
        self._waiting = False
        """True when the next poll waits on the doorbells instead of taking."""
        self._put_client: Any = None
        self._put_script: Any = None
        self._last_write_warning = 0.0
        self.recorded_tag: str | None = None
        """The delivery tag of the entry being delivered, which the take script has recorded as
        unacked already (``QoS.append``)."""

    # -- consuming ---------------------------------------------------------

    def basic_consume(self, queue: str, no_ack: bool, callback: Any, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        consumer = super().basic_consume(queue, no_ack, callback, *args, **kwargs)
        if self.check_entries and not no_ack and queue not in self._fanout_queues:
            # Entries of this queue reach the callback as messages already built and checked
            # by _checked (kombu's own callback would build them from the raw entry, unchecked).
            def deliver(message: Any) -> Any:
                self.qos.append(message, message.delivery_tag)
                return callback(message)

            callbacks = self.connection._callbacks
            assert callbacks is not None  # kombu's basic_consume just set this queue's
            callbacks[queue] = deliver
        return consumer

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
                4 + len(ordered),
                self.unacked_key,
                self.unacked_index_key,
                REFUSED_KEY,
                REFUSED_SEQ_KEY,
                *(key for _, key in ordered),
                repr(time()),
                "1" if self.check_entries else "0",
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
            except ResponseError as exc:  # maxmemory, a denying ACL: the entry stays queued
                self._refused_writes(exc)
                self._waiting = True
                raise Empty() from None
            if sent == "BRPOP":
                # woken by a token, or the wait timed out: either way, look again
                self._waiting = False
                raise Empty()
            if not reply:
                self._waiting = True
                raise Empty()
            dest, item, tag = reply
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            self.recorded_tag = bytes_to_str(tag) if tag else None
            if tag == b"" or not self.check_entries:  # kombu's own path
                self.connection._deliver(loads(bytes_to_str(item)), dest)
            elif (message := self._checked(dest, item, tag)) is not None:
                self.connection._deliver(message, dest)
            else:
                raise Empty()  # refused: look again at once
            return True
        finally:
            self.recorded_tag = None
            self._in_poll = None
            self._flush_brpop_reauth()

    # -- refusing ----------------------------------------------------------

    def _checked(self, queue: str, item: bytes, tag: bytes | None) -> Any:
        """The entry as a kombu message, or ``None`` once it is refused (README: Reliability).

        ``tag`` is ``None`` when the script refused it already (no delivery tag to ack it
        by); else the entry is unacked under it, and a refusal moves it to the refused
        list in one script. Decoding the body here costs nothing extra: kombu caches it on
        the message, and Celery's strategy reads that cache rather than decoding again.
        """
        problem = "no usable properties.delivery_tag (see the refused list)" if tag is None else None
        message = None
        if problem is None:
            try:
                entry = loads(bytes_to_str(item))
                problem = envelope_problem(entry, max_eta=time() + self.visibility_timeout)
                if problem is None:
                    message = self.Message(entry, channel=self)
                    problem = body_problem(message.decode())
            except (Exception, RecursionError) as exc:  # any bytes at all may arrive here
                problem = f"undecodable entry: {type(exc).__name__}: {str(exc)[:200]}"
        if problem is None:
            return message
        if tag is not None:
            try:
                self._side_client().eval(
                    REFUSE_SCRIPT, 4, REFUSED_KEY, REFUSED_SEQ_KEY, self.unacked_key,
                    self.unacked_index_key, queue, problem.replace("\n", " "), item, tag,
                )  # fmt: skip
            except ResponseError as exc:  # still unacked: redelivered after the visibility timeout
                self._refused_writes(exc)
                return None
        logger.warning("refused an entry of %s (%d bytes): %s", queue, len(item), problem)
        if self.refused_handler is not None:
            try:
                self.refused_handler(self._side_client())
            except Exception:  # the entry waits on the refused list for the next attempt
                logger.exception("could not record refused entries")
        return None

    def _refused_writes(self, exc: Exception) -> None:
        """The broker refuses writes (maxmemory, an ACL): wait and look again, never crash."""
        now = monotonic()
        if now - self._last_write_warning > 10:
            self._last_write_warning = now
            logger.warning("the broker refuses writes, taking nothing until it accepts them: %s", exc)

    def _side_client(self) -> Any:
        """A client over the channel's connection pool, not over the connection the consumer polls on."""
        if self._put_client is None or self._put_client.connection_pool is not self.pool:
            self._put_client = self._create_client()
            self._put_script = self._put_client.register_script(PUT_SCRIPT)
        return self._put_client

    # -- producing ---------------------------------------------------------

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """kombu's ``_put`` plus a doorbell token, in the same transaction."""
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        expires = self._expires.get(queue) if self._expires else None
        batch = kwargs.get("_publish_batch")
        body = dumps(message)
        commands: list[tuple[Any, ...]] = [("lpush", key, body)]
        if expires is not None:
            commands += [("pexpire", self._q_for_pri(queue, p), expires) for p in self.priority_steps]
        commands += [("lpush", doorbell(queue), "1"), ("ltrim", doorbell(queue), 0, DOORBELL_TOKENS - 1)]
        if batch is not None:
            for name, *args in commands:
                batch.add(name, *args)
            return
        # kombu makes a client per message; one per channel (and connection pool) will do
        client = self._side_client()
        if expires is None:  # the usual case: one script call
            self._put_script(keys=[key, doorbell(queue)], args=[body, DOORBELL_TOKENS], client=client)
            return
        with client.pipeline() as pipe:
            for name, *args in commands:
                getattr(pipe, name)(*args)
            pipe.execute()

    def _put_fanout(self, exchange: str, message: dict[str, Any], routing_key: str, **kwargs: Any) -> None:
        """kombu's ``_put_fanout`` (events: a follow-up's ``task-sent``, a monitor's control)
        over the channel's one side client: kombu builds a Redis client per message, which cost
        more CPU than the publish itself."""
        batch = kwargs.get("_publish_batch")
        payload = dumps(message)
        for topic in self._get_publish_topics(exchange, routing_key):
            if batch is not None:
                batch.add("publish", topic, payload)
            else:
                self._side_client().publish(topic, payload)


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # kombu takes ``polling_interval`` as the BRPOP timeout and, outside an event
        # loop, also sleeps that long after every empty poll. Here every empty poll is
        # followed by a blocking wait on the doorbells, so the sleep would only delay a
        # message that rang.
        self.polling_interval = None


class SecureTransport(Transport):
    """The same transport for ``rediss://`` URLs (TLS: give ``ssl_cert_reqs`` in the URL's query);
    a class of its own only so that the connection's URL keeps its ``rediss`` scheme."""
