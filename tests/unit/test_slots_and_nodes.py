"""Hash slots of keys and partitions, the partitions' shares of the slots, and node lists."""

from __future__ import annotations

import itertools

import pytest

from contract.slots import SLOTS, crc16, key_slot, partition_slot, partitions_in, slot_ranges
from deploy.redis_nodes import NodeListError, parse_redis_nodes
from deploy.settings import Settings, SettingsError


def test_crc16_is_xmodem_as_redis_cluster_uses() -> None:
    assert crc16(b"123456789") == 0x31C3  # the CRC16/XMODEM check value


def test_key_slots_follow_the_hash_tag_rules() -> None:
    assert key_slot("foo") == 12182  # Redis Cluster's specification
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers") == key_slot("user1000")
    assert key_slot("foo{}{bar}") == key_slot("foo{}{bar}")  # an empty tag: the whole key
    assert key_slot("foo{}{bar}") != key_slot("bar")
    assert key_slot("hg:{p3}:g1:2026112900:users") == partition_slot(3)


@pytest.mark.parametrize(
    ("partitions", "primaries", "shares"),
    [(4, 3, [2, 1, 1]), (12, 3, [4, 4, 4]), (12, 4, [3, 3, 3, 3]), (4, 1, [4]), (2, 3, [1, 1, 0])],
)
def test_slot_ranges_cover_everything_and_share_the_partitions(
    partitions: int, primaries: int, shares: list[int]
) -> None:
    ranges = slot_ranges(partitions, primaries)
    assert ranges[0][0] == 0
    assert ranges[-1][1] == SLOTS - 1
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))
    assert all(low <= high for low, high in ranges)
    assert [len(partitions_in(low, high, partitions)) for low, high in ranges] == shares


def test_one_url_is_one_node_and_several_a_cluster() -> None:
    assert not Settings().redis_cluster
    assert Settings(redis_url="unix:///tmp/redis.sock").redis_nodes() == ()
    listed = Settings(redis_url="redis://u:p@10.0.0.1:7001,redis://u:p@10.0.0.2:7002")
    assert listed.redis_cluster
    assert [n.address for n in listed.redis_nodes()] == ["10.0.0.1:7001", "10.0.0.2:7002"]
    assert {(n.username, n.password) for n in listed.redis_nodes()} == {("u", "p")}


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://h:1,rediss://h:2", "mixes redis:// and rediss://"),
        ("redis://a:b@h:1,redis://a:c@h:2", "other credentials than node 1"),
        ("redis://h:1,redis://h:x", "node 2: the port is not a number"),
        ("redis://h:1,http://h:2", "scheme http:// is not redis:// or rediss://"),
        ("redis://h:1/2,redis://h:2/2", "a cluster has only database 0"),
        ("redis://h:1,redis://h:1", "lists h:1 more than once"),
        ("redis://h:1,,redis://h:2", "an empty entry"),
    ],
)
def test_a_bad_node_list_is_a_settings_error_of_one_line(url: str, says: str) -> None:
    with pytest.raises(NodeListError, match=says):
        parse_redis_nodes(url)
    with pytest.raises(SettingsError, match=says) as raised:
        Settings.from_env({"ANALYTICS_REDIS_URL": url})
    assert "\n" not in str(raised.value)
