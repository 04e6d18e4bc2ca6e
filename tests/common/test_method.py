"""What a method entry is (common/method.py): the per-sample view's defaults, the rows a per-pixel term sees, and a
flag a benchmark's parser lacks."""
import argparse

import torch

from common.method import LabelView, Method, ModelSpec, flag, flat_rows


def test_flat_rows_puts_every_pixel_in_b_h_w_order():
    x = torch.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)        # (B, M, H, W)
    rows = flat_rows(x)
    assert rows.shape == (8, 3)
    for b in range(2):
        for h in range(2):
            for w in range(2):
                assert torch.equal(rows[b * 4 + h * 2 + w], x[b, :, h, w])
    vectors = torch.randn(5, 3)
    assert flat_rows(vectors) is vectors


def test_the_default_view_is_per_sample_and_clamps_srl_slots_to_the_last():
    view = LabelView()
    features, labels = torch.randn(4, 6), torch.tensor([[3.0], [120.0], [0.0], [101.0]])
    assert all(a is b for a, b in zip(view.per_sample(features, labels), (features, labels)))
    pred = features[:, :1]
    rows = view.main_rows(pred, labels)
    assert len(rows) == 3 and rows[0] is pred and rows[1] is labels and rows[2] is None
    assert view.srl_slot(labels, 102).reshape(-1).tolist() == [3.0, 101.0, 0.0, 101.0]
    assert (view.label_scale, view.dense, view.srl_num_labels) == (1.0, False, None)


def test_a_method_does_nothing_unless_it_says_so_and_flags_absent_from_a_parser_read_as_their_default():
    method, args = Method(), argparse.Namespace(lr=0.1)
    assert not method.enabled(args) and method.tag(args) is None and method.head(args) is None
    assert method.term(args, None) is None and method.main_loss(args, None) is None
    assert method.param_groups(args, None, None) == []
    assert (flag(args, "lr"), flag(args, "conr"), flag(args, "conr", 3)) == (0.1, None, 3)
    spec = ModelSpec()
    assert (spec.head, spec.retrained, spec.part) == (("linear.",), None, "trunk")
