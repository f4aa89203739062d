"""The read cache serves a result only while the read models stand where they stood when it was read."""

from chainloom.queries.cache import ReadCache


class Source:
    def __init__(self) -> None:
        self.position = 5
        self.loads = 0

    async def load(self) -> list[int]:
        self.loads += 1
        return [self.position]


async def test_a_result_is_served_again_until_the_position_moves():
    source = Source()
    cache = ReadCache(lambda: source.position)
    assert await cache.get("q", source.load) == [5]
    assert await cache.get("q", source.load) == [5]
    assert source.loads == 1
    source.position = 6
    assert await cache.get("q", source.load) == [6]
    assert source.loads == 2
    assert await cache.get("other", source.load) == [6]
    assert source.loads == 3


async def test_the_stamp_is_taken_before_the_query_runs():
    source = Source()
    cache = ReadCache(lambda: source.position)

    async def load_while_the_models_move():
        value = await source.load()
        source.position = 7  # a batch was applied while the query ran
        return value

    await cache.get("q", load_while_the_models_move)
    assert await cache.get("q", source.load) == [7]  # stamped 5, now 7: reloaded
    assert source.loads == 2


async def test_without_a_position_nothing_is_remembered():
    source = Source()
    cache = ReadCache(None)
    await cache.get("q", source.load)
    await cache.get("q", source.load)
    assert source.loads == 2
