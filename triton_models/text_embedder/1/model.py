"""Triton python backend: run this version's `model.onnx` (the text embedder) with onnxruntime.

Used by configs/cpu.pbtxt (the CPU tritonserver of the nvidia-pytriton wheel has only the python
backend). Triton's dynamic batcher hands `execute` several requests at once; their rows are padded
to the longest sequence (the mask hides the padding from the mean pooling), run as one
onnxruntime call and split back per request. The graph already pools and normalises, so the output
is the final `embedding` [batch, dimension].
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        threads = int(config.get("parameters", {}).get("intra_op_threads", {}).get("string_value", "0") or 0)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        # No spinning: idle onnxruntime threads would busy-wait on cores the stream workers need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            os.path.join(version_dir, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )

    def execute(self, requests: list) -> list:
        ids, masks, rows = [], [], []
        for request in requests:
            ids.append(pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy())
            masks.append(pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy())
            rows.append(ids[-1].shape[0])
        width = max(a.shape[1] for a in ids)
        input_ids = np.concatenate([_pad(a, width) for a in ids]).astype(np.int64, copy=False)
        attention_mask = np.concatenate([_pad(a, width) for a in masks]).astype(np.int64, copy=False)
        (embedding,) = self.session.run(["embedding"], {"input_ids": input_ids, "attention_mask": attention_mask})
        embedding = embedding.astype(np.float32, copy=False)
        responses, start = [], 0
        for n in rows:
            tensor = pb_utils.Tensor("embedding", embedding[start : start + n])
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            start += n
        return responses

    def finalize(self) -> None:
        self.session = None


def _pad(array: np.ndarray, width: int) -> np.ndarray:
    if array.shape[1] == width:
        return array
    return np.pad(array, ((0, 0), (0, width - array.shape[1])), constant_values=0)
