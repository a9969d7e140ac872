"""The real Redis tests run against: chatgate's embedded Redis in a temporary directory."""

from bot.embedded_redis import EmbeddedRedis as RedisServer

__all__ = ["RedisServer"]
