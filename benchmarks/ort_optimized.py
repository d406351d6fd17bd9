"""Write the onnxruntime-optimized variants of the benchmark models that ``engine.py latency
--only bert-base-ortopt,gpt2-ortopt,bert-classic-ortopt`` times:

    python benchmarks/ort_optimized.py bench-models

- ``bert-base-ortopt.onnx`` / ``gpt2-ortopt.onnx``: bench-models' exports after onnxruntime's
  transformers optimizer (``optimize_model(..., opt_level=0)``: its Python fusions only, no
  torch): BiasGelu / FastGelu and SkipLayerNormalization with the biases moved out of the MatMuls
  (its attention fusion does not match these exports' masks).
- ``bert-classic-ortopt.onnx``: the classic BERT export form (tests/ops/_mini_bert.py at
  BERT-base size, 12 layers, seeded random weights, sequence 128) after the same optimizer, which
  fuses it into EmbedLayerNormalization, Attention (merged Q/K/V weights, mask_index),
  SkipLayerNormalization and BiasGelu: what users of onnxruntime's optimizer deploy.

Files are written next to the inputs (hundreds of MB each; never committed).
"""

from __future__ import annotations

import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main(models: str) -> None:
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    for name, kind in (("bert-base", "bert"), ("gpt2", "gpt2")):
        src = os.path.join(models, f"{name}.onnx")
        if not os.path.exists(src):
            print(f"skipped {name}: {src} is missing (../shared/models/make_models.sh)")
            continue
        opt = optimize_model(src, model_type=kind, num_heads=12, hidden_size=768, opt_level=0)
        out = os.path.join(models, f"{name}-ortopt.onnx")
        opt.save_model_to_file(out)
        print(f"wrote {out}: {opt.get_fused_operator_statistics()}")

    import tests.ops._mini_bert as mb

    mb.VOCAB, mb.MAX_POS, mb.HIDDEN, mb.HEADS, mb.LAYERS = 30522, 512, 768, 12, 12
    model = mb.mini_bert(seq=128)
    opt = optimize_model(model, model_type="bert", num_heads=12, hidden_size=768, opt_level=0)
    out = os.path.join(models, "bert-classic-ortopt.onnx")
    onnx.save(opt.model, out)
    print(f"wrote {out}: {opt.get_fused_operator_statistics()}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench-models")
