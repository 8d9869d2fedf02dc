"""The bounded memos of the write path: answers by key or by identity, never more than their limit."""

from __future__ import annotations

from nodeless.api import memos


def test_a_full_memo_forgets_everything_before_it_remembers_the_next() -> None:
    memo: memos.BoundedMemo[str, int] = memos.BoundedMemo(2)
    assert memo.put("a", 1) == 1
    memo.put("b", 2)
    assert memo.full()
    memo.put("c", 3)
    assert (memo.get("a"), memo.get("b"), memo.get("c")) == (None, None, 3)
    assert len(memo) == 1


def test_an_identity_memo_answers_only_for_the_same_object_not_an_equal_one() -> None:
    memo: memos.IdentityMemo[dict[str, int], str] = memos.IdentityMemo(8)
    remembered = {"x": 1}
    memo.put(remembered, "seen")
    assert memo.get(remembered) == "seen"
    assert memo.get({"x": 1}) is None


def test_an_identity_memo_holds_its_objects_so_their_ids_are_not_reused() -> None:
    memo: memos.IdentityMemo[dict[str, int], str] = memos.IdentityMemo(8)
    memo.put({"x": 1}, "first")  # no other reference: only the memo keeps it alive
    for _ in range(1000):
        stranger = {"y": 2}
        assert memo.get(stranger) is None
