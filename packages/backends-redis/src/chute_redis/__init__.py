"""chute's queue and store on Redis: ``--queue redis://host:6379/0 --store redis://host:6379/0``.

The plugin module (``chute_redis.plugin``) registers the ``redis`` and ``rediss`` schemes; see
docs/redis.md for the key layout, round trips and durability.
"""
