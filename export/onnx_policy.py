"""Robot-side runtime for exported policies: ONNX Runtime, numpy and tokenizers only.

``OnnxPolicy`` reads the interface from the model's metadata, tokenizes the instruction,
feeds raw uint8 camera images to the graph and returns the decoded actions that the graph
computes. Importing this module loads neither torch nor transformers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from vla_distill.export.feeds import load_instruction_tokenizer, observation_feeds
from vla_distill.export.metadata import (
    ACTIONS_OUTPUT,
    GRAPH_INPUTS,
    GRAPH_OUTPUTS,
    LOGITS_OUTPUT,
    ExportMetadata,
)

logger = logging.getLogger(__name__)

# ONNX Runtime's errors for a file that is not a loadable model. They derive from Exception
# only, so they are listed one by one instead of catching every exception.
INVALID_MODEL_ERRORS = (
    ort_errors.InvalidProtobuf,
    ort_errors.InvalidGraph,
    ort_errors.InvalidArgument,
    ort_errors.Fail,
    ort_errors.NotImplemented,
)
ALLOW_SPINNING_KEY = "session.intra_op.allow_spinning"


class OnnxPolicy:
    """Exported policy that maps env observations to float32 actions with ONNX Runtime.

    ``intra_op_num_threads`` is the number of threads one inference may use. The inter-op
    pool is fixed at 1 thread because the graph runs sequentially. ``allow_spinning`` lets
    idle intra-op threads busy-wait for the next inference: lower latency, but a full core
    stays busy between control steps, so it is off by default.
    """

    def __init__(
        self,
        path: str | Path,
        intra_op_num_threads: int = 1,
        allow_spinning: bool = False,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        self.path = Path(path)
        self.session = create_session(self.path, intra_op_num_threads, allow_spinning, providers)
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = ExportMetadata.from_props(props, source=str(self.path))
        check_graph_io(self.session, self.path)
        self.tokenizer = load_instruction_tokenizer(self.metadata)
        logger.info(
            "loaded %s policy %s (quantization %s, %d intra-op threads)",
            self.metadata.policy_kind,
            self.path,
            self.metadata.quantization,
            intra_op_num_threads,
        )

    def reset(self) -> None:
        """Clear per-episode state. Exported policies act on one step and keep none."""

    def predict_action(self, obs: Mapping[str, Any]) -> np.ndarray:
        """Return float32 actions for one observation (shape (7,)) or a batch (shape (B, 7)).

        Each action value is the centre of the highest-scoring bin, decoded inside the graph.
        """
        feeds, batched = observation_feeds(obs, self.metadata, self.tokenizer)
        (actions,) = self.session.run([ACTIONS_OUTPUT], feeds)
        return actions if batched else actions[0]

    def run(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Return ``action_logits`` (B, action_dim, n_bins) and ``actions`` (B, action_dim).

        Both keep the batch axis, also for a single observation.
        """
        feeds, _ = observation_feeds(obs, self.metadata, self.tokenizer)
        logits, actions = self.session.run(list(GRAPH_OUTPUTS), feeds)
        return {LOGITS_OUTPUT: logits, ACTIONS_OUTPUT: actions}


def session_options(intra_op_num_threads: int, allow_spinning: bool) -> ort.SessionOptions:
    """Return session options with explicit thread counts and spinning."""
    if isinstance(intra_op_num_threads, bool) or not isinstance(intra_op_num_threads, int) or intra_op_num_threads < 1:
        raise ValueError(f"intra_op_num_threads must be an integer >= 1, got {intra_op_num_threads!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry(ALLOW_SPINNING_KEY, "1" if allow_spinning else "0")
    return options


def create_session(
    path: Path, intra_op_num_threads: int, allow_spinning: bool, providers: Sequence[str]
) -> ort.InferenceSession:
    """Open an ONNX Runtime session, raising FileNotFoundError or ValueError for a bad file."""
    options = session_options(intra_op_num_threads, allow_spinning)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX policy not found: {path}; export one with `vla-distill export`")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except INVALID_MODEL_ERRORS as error:
        raise ValueError(
            f"{path} is not a valid ONNX model ({error}); the file may be truncated or corrupted, "
            "export it again with `vla-distill export`"
        ) from error


def check_graph_io(session: ort.InferenceSession, path: Path) -> None:
    """Raise ValueError unless the graph has exactly the inputs and outputs of an exported policy."""
    inputs = sorted(node.name for node in session.get_inputs())
    outputs = {node.name for node in session.get_outputs()}
    if inputs != sorted(GRAPH_INPUTS) or not set(GRAPH_OUTPUTS) <= outputs:
        raise ValueError(
            f"{path} has inputs {inputs} and outputs {sorted(outputs)}; an exported policy needs "
            f"inputs {sorted(GRAPH_INPUTS)} and outputs {list(GRAPH_OUTPUTS)}"
        )
