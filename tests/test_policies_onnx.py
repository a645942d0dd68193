"""The contract's exportability: uint8 image -> normalize -> forward -> decode traces into ONNX."""

import numpy as np
import onnxruntime
import pytest
import torch

from vla_distill.policies.image_normalization import ImageNormalizer
from vla_distill.policies.io import create_policy

INPUT_NAMES = ["image", "input_ids", "attention_mask", "state"]


class ExportWrapper(torch.nn.Module):
    """Graph from raw uint8 pixels and token ids to decoded actions."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.normalizer = ImageNormalizer.from_config(model.config)
        self.action_tokenizer = model.config.action_tokenizer()

    def forward(self, image, input_ids, attention_mask, state):
        batch = {"image": self.normalizer(image), "input_ids": input_ids, "attention_mask": attention_mask, "state": state}
        return self.action_tokenizer.decode_logits(self.model(batch).action_logits)


def example_inputs(batch_size, seed):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch_size, 16, dtype=torch.int64)
    mask[:, :6] = 1
    return (
        torch.randint(0, 256, (batch_size, 64, 64, 3), dtype=torch.uint8, generator=generator),
        torch.randint(2, 38, (batch_size, 16), generator=generator) * mask,
        mask,
        torch.randn(batch_size, 4, generator=generator),
    )


@pytest.mark.parametrize(("kind", "preset"), [("teacher", "tiny"), ("student", "small")])
def test_export_matches_torch(tmp_path, kind, preset):
    torch.manual_seed(0)
    wrapper = ExportWrapper(create_policy(kind, preset).eval()).eval()
    path = tmp_path / f"{kind}.onnx"
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        wrapper,
        example_inputs(2, seed=0),
        str(path),
        dynamo=True,
        input_names=INPUT_NAMES,
        output_names=["action"],
        dynamic_shapes=tuple({0: batch} for _ in INPUT_NAMES),
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = example_inputs(3, seed=1)  # another batch size than the traced one
    onnx_actions = session.run(None, {name: value.numpy() for name, value in zip(INPUT_NAMES, inputs)})[0]
    with torch.no_grad():
        torch_actions = wrapper(*inputs).numpy()
    assert onnx_actions.shape == (3, 7)
    np.testing.assert_allclose(onnx_actions, torch_actions, atol=1e-6)
