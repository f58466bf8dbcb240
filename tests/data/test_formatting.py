"""The pure formatting helpers, by hand."""

from edgerlhf.data.formatting import shared_system


def test_shared_system_is_the_one_every_prompt_opens_with():
    sys_a = {"role": "system", "content": "A"}
    user = {"role": "user", "content": "hi"}
    assert shared_system([[sys_a, user], [sys_a, {"role": "user", "content": "yo"}]]) == "A"
    assert shared_system([[user], "a string prompt"]) == ""  # none has one: the template's default is what it saw
    assert shared_system([[sys_a, user], [user]]) is None  # differ: no single one to carry
    assert shared_system([[sys_a, user], [{"role": "system", "content": "B"}, user]]) is None
    assert shared_system([]) == ""
