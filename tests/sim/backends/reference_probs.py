"""Letter probabilities (and likelihood-mode option log-likelihoods) from the transformers
backend, for comparison with the vLLM backends.

Run in the project's main environment (the vLLM tests call it there, because ``.venv-vllm``
carries an older transformers)::

    python tests/sim/backends/reference_probs.py SCENES.json MODEL_DIR OUT.json [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", help="JSON list of scene records")
    parser.add_argument("model", help="HF model folder")
    parser.add_argument("out", help="output JSON: {dtype, probs: [[...], ...]}")
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()

    from usermirrorer.sim.backends.transformers_backend import TransformersBackend
    from usermirrorer.sim.prompts import build_likelihood_prompt, build_prompt

    scenes = json.loads(open(args.scenes).read())
    backend = TransformersBackend(args.model, dtype=args.dtype, num_threads=2)
    prompts = [build_prompt(s, "direct") for s in scenes]
    logprobs = backend.letter_logprobs(prompts, [list(p.letters) for p in prompts])
    import numpy as np
    import transformers

    result = {
        "dtype": args.dtype,
        "transformers": transformers.__version__,
        "token_ids": backend.encode(prompts),
        "probs": [np.exp(lp).tolist() for lp in logprobs],
        # likelihood mode: each option text's log-likelihood after the scene's context
        "likelihood": [
            {"logprob": scored.logprob.tolist(), "tokens": scored.tokens.tolist()}
            for scored in backend.continuation_logprobs([build_likelihood_prompt(s) for s in scenes],
                                                        [s["text"]["action_list"] for s in scenes])
        ],
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
