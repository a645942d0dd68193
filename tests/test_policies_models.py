"""Teacher and student models: presets, forward shapes, gradients and the processor contract."""

import numpy as np
import pytest
import torch

from vla_distill.policies.coordinates import SpatialSoftmax, coordinate_grid
from vla_distill.policies.contract import VISUAL_FEATURES, validate_batch
from vla_distill.policies.image_normalization import ImageNormalizer, normalize_images
from vla_distill.policies.io import create_policy
from vla_distill.policies.processor import PolicyProcessor
from vla_distill.policies.student import STUDENT_PRESETS, StudentConfig, StudentPolicy
from vla_distill.policies.teacher import TEACHER_PRESETS, TeacherConfig, TeacherPolicy

# Presets small enough to run a real forward pass on 2 CPU cores in well under a second.
RUNNABLE = [("teacher", "tiny"), ("teacher", "small"), ("teacher", "reference"), ("student", "tiny"), ("student", "small")]
ALL_PRESETS = [("teacher", name) for name in TEACHER_PRESETS] + [("student", name) for name in STUDENT_PRESETS]
CLASSES = {"teacher": (TeacherConfig, TeacherPolicy), "student": (StudentConfig, StudentPolicy)}


def make_observation(batch_size=None, seed=0, image_size=64):
    rng = np.random.default_rng(seed)
    shape = () if batch_size is None else (batch_size,)
    instructions = ["push the red cube into the yellow zone", "lift the blue block", "reach the green cube"]
    return {
        "image": rng.integers(0, 256, size=(*shape, image_size, image_size, 3), dtype=np.uint8),
        "state": rng.normal(0.0, 0.1, size=(*shape, 4)).astype(np.float32),
        "instruction": instructions[0] if batch_size is None else tuple(instructions[i % 3] for i in range(batch_size)),
    }


def count_on_meta(kind, preset):
    config_class, model_class = CLASSES[kind]
    with torch.device("meta"):
        model = model_class(config_class.from_preset(preset))
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize(("kind", "preset"), RUNNABLE)
def test_forward_shapes_and_dtypes(kind, preset):
    torch.manual_seed(0)
    model = create_policy(kind, preset).eval()
    batch = model.processor(make_observation(batch_size=3))
    validate_batch(batch, model.config)
    output = model(batch)
    assert output.action_logits.shape == (3, 7, 256)
    assert output.action_logits.dtype == torch.float32
    assert torch.isfinite(output.action_logits).all()
    visual = output.features[VISUAL_FEATURES]
    assert visual.ndim == 2
    assert visual.shape[0] == 3
    assert visual.dtype == torch.float32


@pytest.mark.parametrize(("kind", "preset"), ALL_PRESETS)
def test_forward_shapes_on_meta_device(kind, preset):
    # The meta device computes shapes without allocating weights, so large presets stay cheap.
    config_class, model_class = CLASSES[kind]
    config = config_class.from_preset(preset)
    with torch.device("meta"):
        model = model_class(config)
        batch = {
            "image": torch.empty(2, 3, 64, 64),
            "input_ids": torch.zeros(2, 16, dtype=torch.int64),
            "attention_mask": torch.ones(2, 16, dtype=torch.int64),
            "state": torch.empty(2, 4),
        }
        output = model(batch)
    assert output.action_logits.shape == (2, 7, 256)
    assert output.features[VISUAL_FEATURES].shape[0] == 2


def test_preset_parameter_counts():
    teacher_tiny = count_on_meta("teacher", "tiny")
    teacher_reference = count_on_meta("teacher", "reference")
    student_small = count_on_meta("student", "small")
    assert teacher_tiny < 200_000
    assert 3_000_000 <= teacher_reference <= 5_000_000
    assert teacher_reference >= 50 * student_small
    assert count_on_meta("student", "tiny") < student_small
    counts = [count_on_meta("teacher", name) for name in ("tiny", "small", "reference", "large", "xl")]
    assert counts == sorted(counts)


def test_default_configs_are_documented_presets():
    assert TeacherConfig().hidden_size == TEACHER_PRESETS["reference"]["hidden_size"]
    assert StudentConfig().conv_channels == STUDENT_PRESETS["small"]["conv_channels"]


@pytest.mark.parametrize(("kind", "preset"), [("teacher", "tiny"), ("student", "tiny"), ("student", "small")])
def test_every_parameter_gets_gradient(kind, preset):
    torch.manual_seed(0)
    model = create_policy(kind, preset).train()
    batch = model.processor(make_observation(batch_size=4))
    targets = torch.randint(0, 256, (4, 7))
    logits = model(batch).action_logits
    torch.nn.functional.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1)).backward()
    without_gradient = [
        name
        for name, parameter in model.named_parameters()
        if parameter.grad is None or not parameter.grad.abs().sum() > 0
    ]
    assert without_gradient == []


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_predict_action_single_and_batched(kind):
    torch.manual_seed(0)
    model = create_policy(kind, "tiny").eval()
    single = model.predict_action(make_observation())
    assert single.shape == (7,)
    assert single.dtype == np.float32
    batched = model.predict_action(make_observation(batch_size=5))
    assert batched.shape == (5, 7)
    assert batched.dtype == np.float32
    assert np.all(np.abs(batched) < 1.0)
    model.reset()


def test_predict_action_matches_batch_rows():
    torch.manual_seed(0)
    model = create_policy("student", "tiny").eval()
    obs = make_observation(batch_size=3)
    batched = model.predict_action(obs)
    for index in range(3):
        row = {key: value[index] for key, value in obs.items()}
        np.testing.assert_array_equal(model.predict_action(row), batched[index])


def test_predict_action_sampling_is_seeded():
    torch.manual_seed(0)
    model = create_policy("student", "tiny").eval()
    obs = make_observation(batch_size=2)
    first = model.predict_action(obs, greedy=False, generator=torch.Generator().manual_seed(3))
    second = model.predict_action(obs, greedy=False, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(first, second)


def test_predict_action_without_processor_raises():
    model = StudentPolicy(StudentConfig.from_preset("tiny"))
    with pytest.raises(ValueError, match="no processor attached"):
        model.predict_action(make_observation())


def test_processor_batch_layout():
    config = StudentConfig.from_preset("tiny")
    processor = PolicyProcessor.from_config(config)
    obs = make_observation(batch_size=2)
    batch = processor(obs)
    assert batch["image"].shape == (2, 3, 64, 64)
    assert batch["input_ids"].dtype == torch.int64
    assert batch["attention_mask"].tolist()[1] == [1] * 4 + [0] * 12  # "lift the blue block"
    # Pixel (0, 0) of image 0: (value / 255 - 0.5) / 0.5 per channel.
    expected = (obs["image"][0, 0, 0].astype(np.float32) / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(batch["image"][0, :, 0, 0].numpy(), expected, rtol=1e-6)


def test_processor_unknown_word_is_unk():
    processor = PolicyProcessor.from_config(StudentConfig.from_preset("tiny"))
    input_ids, mask = processor.tokenize(["fly to the moon"])
    unk = processor.tokenizer.token_to_id("[UNK]")
    assert input_ids[0, 0] == unk  # "fly"
    assert input_ids[0, 3] == unk  # "moon"
    assert mask[0].sum() == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": np.zeros((32, 32, 3), dtype=np.uint8)}, "image_size=64"),
        ({"image": np.zeros((64, 64, 3), dtype=np.float32)}, "uint8"),
        ({"state": np.zeros(3, dtype=np.float32)}, "state must have shape"),
        ({"state": np.array([0, 0, np.nan, 0], dtype=np.float32)}, "NaN"),
        ({"instruction": 3}, "must be str"),
    ],
)
def test_processor_rejects_invalid_observation(change, message):
    processor = PolicyProcessor.from_config(StudentConfig.from_preset("tiny"))
    obs = {**make_observation(), **change}
    with pytest.raises(ValueError, match=message):
        processor(obs)


def test_processor_rejects_missing_key():
    processor = PolicyProcessor.from_config(StudentConfig.from_preset("tiny"))
    obs = make_observation()
    del obs["state"]
    with pytest.raises(ValueError, match="missing keys \\['state'\\]"):
        processor(obs)


def test_empty_instruction_gives_finite_logits():
    torch.manual_seed(0)
    model = create_policy("teacher", "tiny").eval()
    obs = make_observation()
    obs["instruction"] = ""
    logits = model(model.processor(obs)).action_logits
    assert torch.isfinite(logits).all()


def test_coordinate_grid_on_two_by_two_pixels():
    grid = coordinate_grid(2, 2)
    np.testing.assert_allclose(grid[0].numpy(), [[-0.5, 0.5], [-0.5, 0.5]])  # x follows columns
    np.testing.assert_allclose(grid[1].numpy(), [[-0.5, -0.5], [0.5, 0.5]])  # y follows rows


def test_spatial_softmax_finds_a_peak():
    features = torch.zeros(1, 2, 4, 4)
    features[0, 0, 1, 3] = 50.0  # row 1, column 3: x = 0.75, y = -0.25
    keypoints = SpatialSoftmax()(features)
    np.testing.assert_allclose(keypoints[0, :2].numpy(), [0.75, -0.25], atol=1e-6)
    np.testing.assert_allclose(keypoints[0, 2:].numpy(), [0.0, 0.0], atol=1e-6)  # flat map: the centre


def test_teacher_vision_follows_instruction():
    torch.manual_seed(0)
    model = create_policy("teacher", "tiny").eval()
    for module in model.stem.films:
        torch.nn.init.normal_(module.projection.weight, std=0.5)
    image = torch.randn(1, 3, 64, 64)
    first, second = torch.randn(2, model.config.hidden_size).chunk(2)
    with torch.no_grad():
        assert not torch.allclose(model.encode_image(image, first), model.encode_image(image, second))


def test_teacher_stem_keeps_image_scale():
    # Normal(0, 0.02) conv weights shrank the image to token std 0.004, below the position embeddings.
    torch.manual_seed(0)
    model = create_policy("teacher", "reference").eval()
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stem = model.stem(torch.cat([image, torch.zeros(2, 2, 64, 64)], dim=1), torch.zeros(2, 192))
        tokens = model.patch_embedding(stem)
    assert tokens.std() > 0.1
    assert tokens.std() > 5 * model.patch_position.weight.std()


def test_keypoint_token_adds_one_vision_token():
    with_token = create_policy("teacher", "tiny", keypoint_token=True).eval()
    without = create_policy("teacher", "tiny", keypoint_token=False).eval()
    image, instruction = torch.randn(1, 3, 64, 64), torch.randn(1, with_token.config.hidden_size)
    with torch.no_grad():
        assert with_token.encode_image(image, instruction).shape[1] == with_token.config.num_patches + 1
        assert without.encode_image(image, instruction).shape[1] == without.config.num_patches
    assert TeacherConfig().keypoint_token is False  # configs saved before the field load unchanged


def test_image_normalizer_matches_function():
    images = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    normalizer = ImageNormalizer([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
    expected = normalize_images(images, torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3]))
    assert torch.equal(normalizer(images), expected)
    assert normalizer.state_dict() == {}


@pytest.mark.parametrize(
    ("config_class", "overrides", "message"),
    [
        (TeacherConfig, {"hidden_size": 30, "num_attention_heads": 4}, "divisible"),
        (TeacherConfig, {"image_size": 60}, "patch_size"),
        (TeacherConfig, {"action_dim": 0}, "action_dim"),
        (TeacherConfig, {"image_std": [0.5, 0.0, 0.5]}, "positive"),
        (StudentConfig, {"film_stages": 9}, "film_stages"),
        (StudentConfig, {"conv_channels": []}, "conv_channels"),
        (StudentConfig, {"conv_strides": [2, 2]}, "conv_strides"),
        (StudentConfig, {"conv_strides": [2, 3, 2, 1]}, "1 or 2"),
        (TeacherConfig, {"patch_size": 8, "stem_channels": [8, 8, 8, 8]}, "multiple of"),
        (StudentConfig, {"hidden_size": "wide"}, "hidden_size"),
    ],
)
def test_invalid_config_raises(config_class, overrides, message):
    with pytest.raises(ValueError, match=message):
        config_class(**overrides)


def test_unknown_preset_and_field_raise():
    with pytest.raises(ValueError, match="unknown teacher preset"):
        TeacherConfig.from_preset("huge")
    with pytest.raises(ValueError, match="unknown TeacherConfig fields \\['hiden_size'\\]"):
        TeacherConfig.from_preset("tiny", hiden_size=3)
