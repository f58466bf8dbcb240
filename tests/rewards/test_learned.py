"""Scoring with a learned reward model: length-sorted batches, results in the caller's order."""

import torch

from edgerlhf.rewards.learned import RewardModel, load_seq_cls


def test_scores_come_back_in_order_whatever_the_batching():
    model, tok = load_seq_cls("tiny", seed=1)[:2]
    rm = RewardModel(model, tok, {"max_length": 64})
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(5, 200, (int(n),), generator=g).tolist() for n in torch.randint(3, 40, (13,), generator=g)]
    alone = [rm.score_ids([s])[0] for s in seqs]
    rm.tokens_per_batch = 100
    batched = rm.score_ids(seqs)
    assert torch.allclose(torch.tensor(batched), torch.tensor(alone), atol=1e-5)
    assert len(set(round(x, 4) for x in alone)) > 5  # different sequences, different scores: order is tested


def _pairs(tok, n=5, seed=0):
    """Pairs sharing a prompt of varied length, responses of varied length; one pair's rejected is a prefix of
    its chosen (their common prefix must stop before either scored token)."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda a, b: torch.randint(5, 200, (int(torch.randint(a, b, (1,), generator=g)),), generator=g).tolist()  # noqa: E731
    chosen, rejected = [], []
    for _ in range(n):
        p = rnd(4, 20)
        chosen.append(p + rnd(2, 12))
        rejected.append(p + rnd(1, 9))
    rejected[0] = chosen[0][:-2]
    return chosen, rejected


def test_pair_rewards_equal_scoring_apart_and_so_do_their_gradients():
    from edgerlhf.models.generation import right_pad
    from edgerlhf.rewards.learned import pair_rewards, rewards_of

    model, tok = load_seq_cls("tiny", seed=2)[:2]
    chosen, rejected = _pairs(tok)
    ids, mask = right_pad(chosen + rejected, tok.pad_token_id)
    apart = rewards_of(model, ids, mask)
    (apart[:5] - apart[5:]).sum().backward()
    g_apart = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    rc, rr = pair_rewards(model, chosen, rejected, tok.pad_token_id)
    assert torch.allclose(torch.cat([rc, rr]), apart, atol=1e-5)
    (rc - rr).sum().backward()
    for n, g in g_apart.items():
        assert torch.allclose(dict(model.named_parameters())[n].grad, g, atol=1e-5), n


def test_score_pairs_matches_score_ids_and_falls_back_when_nothing_is_shared():
    model, tok = load_seq_cls("tiny", seed=3)[:2]
    rm = RewardModel(model, tok, {"max_length": 64})
    chosen, rejected = _pairs(tok, n=7, seed=1)
    rejected[3] = [7] + rejected[3][1:] if chosen[3][0] != 7 else [8] + rejected[3][1:]  # shares no token
    want = rm.score_ids(chosen + rejected)
    rm.tokens_per_batch = 64
    rc, rr = rm.score_pairs(chosen, rejected)
    assert torch.allclose(torch.tensor(rc + rr), torch.tensor(want), atol=1e-5)
    rm.shared_prefix = False
    rc, rr = rm.score_pairs(chosen, rejected)  # both sides whole, through score_ids
    assert torch.allclose(torch.tensor(rc + rr), torch.tensor(want), atol=1e-5)


def test_score_groups_equals_scoring_apart_for_groups_of_any_size():
    """A prompt's candidates scored with the prompt run once per group: the same scores as each sequence alone,
    for groups of different sizes and prompt lengths, one candidate a prefix of another, in the caller's order."""
    model, tok = load_seq_cls("tiny", seed=4)[:2]
    rm = RewardModel(model, tok, {"max_length": 64})
    g = torch.Generator().manual_seed(5)
    rnd = lambda a, b: torch.randint(5, 200, (int(torch.randint(a, b, (1,), generator=g)),), generator=g).tolist()  # noqa: E731
    groups = []
    for size in (1, 3, 6, 2):
        p = rnd(4, 20)
        groups.append([p + rnd(1, 10) for _ in range(size)])
    groups[2][1] = groups[2][0][:-1]  # a candidate that is a prefix of another
    want = rm.score_ids([s for grp in groups for s in grp])
    for tokens_per_batch, batch_size in ((512, 32), (40, 4)):
        rm.tokens_per_batch, rm.batch_size = tokens_per_batch, batch_size
        got = rm.score_groups(groups)
        assert [len(x) for x in got] == [1, 3, 6, 2]
        assert torch.allclose(torch.tensor([x for grp in got for x in grp]), torch.tensor(want), atol=1e-5)
    rm.shared_prefix = False
    assert torch.allclose(torch.tensor([x for grp in rm.score_groups(groups) for x in grp]), torch.tensor(want),
                          atol=1e-5)
