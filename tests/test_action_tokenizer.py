"""Action tokenizer: hand-computed bin indices and centres for 256 bins over [-1, 1].

Bin width is 2 / 256 = 1/128. Bin i covers [-1 + i/128, -1 + (i + 1)/128) and its centre is
-1 + (i + 0.5)/128, so the first centre is -1 + 1/256 and the last is 1 - 1/256.
"""

import numpy as np
import pytest
import torch

from vla_distill.policies.action_tokenizer import ActionTokenizer

TOKENIZER = ActionTokenizer(n_bins=256, low=-1.0, high=1.0)


def test_encode_range_edges():
    assert TOKENIZER.encode(-1.0) == 0
    assert TOKENIZER.encode(1.0) == 255


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, 128),  # (0 + 1) * 128 = 128.0 -> bin 128
        (-1.0 + 1 / 128, 1),  # lower edge of bin 1
        (-1.0 + 1 / 128 - 1e-9, 0),  # just below it
        (0.5, 192),  # 1.5 * 128 = 192
        (-5.0, 0),  # clipped to -1
        (7.0, 255),  # clipped to 1
    ],
)
def test_encode_hand_computed(value, expected):
    assert TOKENIZER.encode(value) == expected


def test_decode_edge_bin_centres():
    assert TOKENIZER.decode(0) == pytest.approx(-1 + 1 / 256)
    assert TOKENIZER.decode(255) == pytest.approx(1 - 1 / 256)
    assert TOKENIZER.decode(128) == pytest.approx(1 / 256)


def test_round_trip_within_half_bin():
    values = np.linspace(-1.0, 1.0, 10001)
    error = np.abs(TOKENIZER.decode(TOKENIZER.encode(values)) - values)
    assert error.max() <= 1 / 256 + 1e-7


def test_output_dtypes_numpy():
    indices = TOKENIZER.encode(np.zeros((3, 7), dtype=np.float32))
    assert indices.dtype == np.int64
    assert indices.shape == (3, 7)
    assert TOKENIZER.decode(indices).dtype == np.float32


def test_torch_matches_numpy():
    values = np.random.default_rng(0).uniform(-1.5, 1.5, size=(5, 7)).astype(np.float32)
    torch_indices = TOKENIZER.encode(torch.from_numpy(values))
    assert isinstance(torch_indices, torch.Tensor)
    assert torch_indices.dtype == torch.int64
    np.testing.assert_array_equal(torch_indices.numpy(), TOKENIZER.encode(values))
    torch_centres = TOKENIZER.decode(torch_indices)
    assert torch_centres.dtype == torch.float32
    np.testing.assert_array_equal(torch_centres.numpy(), TOKENIZER.decode(TOKENIZER.encode(values)))


@pytest.mark.parametrize("bad_index", [256, -1, 1000])
def test_decode_out_of_range_raises(bad_index):
    with pytest.raises(ValueError, match="out of range"):
        TOKENIZER.decode(np.array([0, bad_index]))
    with pytest.raises(ValueError, match="out of range"):
        TOKENIZER.decode(torch.tensor([0, bad_index]))


def test_decode_float_indices_raises():
    with pytest.raises(ValueError, match="integers"):
        TOKENIZER.decode(np.array([1.0]))
    with pytest.raises(ValueError, match="integers"):
        TOKENIZER.decode(torch.tensor([1.0]))


def test_encode_nan_raises():
    with pytest.raises(ValueError, match="NaN"):
        TOKENIZER.encode(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="NaN"):
        TOKENIZER.encode(torch.tensor([float("inf")]))


def test_decode_logits_picks_argmax_centre():
    logits = torch.zeros(2, 7, 256)
    logits[0, :, 0] = 5.0
    logits[1, :, 255] = 5.0
    actions = TOKENIZER.decode_logits(logits)
    assert actions.shape == (2, 7)
    assert actions.dtype == torch.float32
    assert torch.allclose(actions[0], torch.full((7,), -1 + 1 / 256))
    assert torch.allclose(actions[1], torch.full((7,), 1 - 1 / 256))


def test_decode_logits_wrong_bin_count_raises():
    with pytest.raises(ValueError, match="n_bins=256"):
        TOKENIZER.decode_logits(torch.zeros(1, 7, 128))


@pytest.mark.parametrize(("n_bins", "low", "high"), [(1, -1.0, 1.0), (256, 1.0, -1.0), (256, 0.0, 0.0)])
def test_invalid_parameters_raise(n_bins, low, high):
    with pytest.raises(ValueError):
        ActionTokenizer(n_bins=n_bins, low=low, high=high)


def test_other_range_and_bin_count():
    tokenizer = ActionTokenizer(n_bins=4, low=0.0, high=2.0)  # bins of width 0.5
    np.testing.assert_array_equal(tokenizer.encode([0.0, 0.49, 0.5, 1.99, 2.0]), [0, 0, 1, 3, 3])
    np.testing.assert_allclose(tokenizer.bin_centers(), [0.25, 0.75, 1.25, 1.75])
