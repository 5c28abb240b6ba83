"""The reuse engine's decoding groups (plan.memory.decode_groups): consecutive probes, within the room and the
row cap, each group sized by its own longest prompt plus the answer budget."""

import pytest

from kanana_longctx.plan.memory import decode_groups


def test_groups_fill_up_to_the_row_cap_in_order():
    assert decode_groups([10] * 7, room_bytes=float("inf"), kv_bytes_per_token=1, max_new_tokens=2, max_rows=3) == [
        [0, 1, 2], [3, 4, 5], [6]]


def test_a_group_is_sized_by_its_longest_prompt_and_the_budget():
    # room 100 bytes at 1 byte a position: two rows of (40 + 10) fit, a third does not; a 90-token prompt fits
    # only alone, and one longer than the room is still a group of one
    lengths = [40, 30, 40, 90, 200, 10, 10]
    groups = decode_groups(lengths, room_bytes=100, kv_bytes_per_token=1, max_new_tokens=10)
    assert groups == [[0, 1], [2], [3], [4], [5, 6]]
    assert [i for g in groups for i in g] == list(range(len(lengths)))


def test_no_room_decodes_one_at_a_time_and_bad_arguments_are_refused():
    assert decode_groups([5, 5], room_bytes=-1, kv_bytes_per_token=8, max_new_tokens=1) == [[0], [1]]
    assert decode_groups([], room_bytes=10, kv_bytes_per_token=1, max_new_tokens=1) == []
    with pytest.raises(ValueError):
        decode_groups([5], room_bytes=10, kv_bytes_per_token=1, max_new_tokens=1, max_rows=0)
