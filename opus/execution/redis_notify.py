"""Phase-change notices through Redis pub/sub, for servers whose jobs run on Celery workers
on other hosts. A notice lost while Redis is down costs a waiter its next re-check only."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)

CHANNEL = "opus:phase"


class RedisNotifier:
    def __init__(self, url: str) -> None:
        self.url = url
        self._client: redis.Redis | None = None

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.url, socket_timeout=2, socket_connect_timeout=2
            )
        return self._client

    def publish(self, job_id: str) -> None:
        try:
            self._redis().publish(CHANNEL, job_id)
        except redis.RedisError as exc:
            log.warning("phase notice for %s not sent: %s", job_id, exc)

    def listen(self, callback: Callable[[str], None]) -> None:
        def loop() -> None:
            while True:
                try:
                    client = redis.Redis.from_url(self.url, socket_connect_timeout=2)
                    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call,unused-ignore]
                    pubsub.subscribe(CHANNEL)
                    # redis's own types differ between releases (typed since 8)
                    for message in pubsub.listen():  # type: ignore[no-untyped-call,unused-ignore]
                        data = message.get("data")
                        if isinstance(data, bytes):
                            callback(data.decode(errors="replace"))
                except redis.RedisError as exc:
                    log.warning("phase notices from Redis interrupted: %s", exc)
                    time.sleep(1)

        threading.Thread(target=loop, name="opus-redis-notices", daemon=True).start()
