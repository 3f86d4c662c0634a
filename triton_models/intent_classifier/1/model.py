"""Triton python backend: run this version's `model.onnx` with onnxruntime (configs/cpu.pbtxt).

Triton's dynamic batcher hands `execute` several requests at once; their rows are padded to the
longest sequence (padding is masked out by `attention_mask`), run as one onnxruntime call and
split back per request. The file is the same for every version: it loads the `model.onnx` that
sits beside it. It answers every output the config declares and the model has (`logits`, and
`oos_score` for models trained since issue 15), but only those a request asks for.
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
        # Idle onnxruntime threads spin for a while after each run by default; on a CPU shared with
        # the stream workers that spinning takes cores the workers need (see README, NLU serving).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            os.path.join(version_dir, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        # The config may declare outputs an older model.onnx lacks (oos_score): serve the intersection.
        declared = [o["name"] for o in config.get("output", [])]
        present = {o.name for o in self.session.get_outputs()}
        self.outputs = [name for name in declared if name in present] or ["logits"]

    def execute(self, requests: list) -> list:
        ids, masks, rows = [], [], []
        for request in requests:
            ids.append(pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy())
            masks.append(pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy())
            rows.append(ids[-1].shape[0])
        width = max(a.shape[1] for a in ids)
        input_ids = np.concatenate([_pad(a, width) for a in ids]).astype(np.int64, copy=False)
        attention_mask = np.concatenate([_pad(a, width) for a in masks]).astype(np.int64, copy=False)
        results = self.session.run(self.outputs, {"input_ids": input_ids, "attention_mask": attention_mask})
        results = [r.astype(np.float32, copy=False) for r in results]
        responses, start = [], 0
        for request, n in zip(requests, rows, strict=True):
            wanted = set(request.requested_output_names()) or set(self.outputs)
            tensors = [
                pb_utils.Tensor(name, r[start : start + n])
                for name, r in zip(self.outputs, results, strict=True)
                if name in wanted
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self) -> None:
        self.session = None


def _pad(array: np.ndarray, width: int) -> np.ndarray:
    if array.shape[1] == width:
        return array
    return np.pad(array, ((0, 0), (0, width - array.shape[1])), constant_values=0)
