"""``usermirrorer serve``: one model, an OpenAI-compatible scoring endpoint for many env workers.

The service is :mod:`usermirrorer.sim.serving`; this module parses the arguments.
"""

from __future__ import annotations

import argparse

from usermirrorer.sim.serving import serve

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``usermirrorer serve``."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a simulator model on CPU behind an OpenAI-compatible /v1/completions endpoint",
        description=(
            "Load --model once with the transformers backend and answer POST /v1/completions as "
            "`vllm serve` does (letter log-probabilities by token id, generation), so many env workers "
            "(usermirrorer.envs.workers.ServedVectorEnv, or any process using backend='openai') share one "
            "model. Scoring requests arriving within --batch-window-ms of each other are scored in one "
            "batched forward pass. On a GPU node run `vllm serve` instead; the clients are the same."
        ),
        epilog=(
            "example:\n"
            "  usermirrorer serve --model smollm2-135m --port 8000\n"
            "  # clients: backend='openai', backend_kwargs={'base_url': 'http://127.0.0.1:8000/v1',\n"
            "  #                                            'vllm_extensions': True}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="registry name (smollm2-135m, tiny-random, ...), folder or hub id")
    parser.add_argument("--served-model-name", help="the name clients send as 'model' (default: --model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--batch-window-ms", type=float, default=5.0,
                        help="how long the first waiting scoring request waits for others to share its forward "
                             "pass (default 5)")
    parser.add_argument("--max-batch-size", type=int, default=64, help="most scoring requests per forward (default 64)")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 (default auto: bf16 where the CPU has it)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads of the model")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    parser.set_defaults(func=run, interrupted="stopped")
    return parser


def run(args: argparse.Namespace) -> int:
    """Entry point of ``usermirrorer serve`` (blocks until interrupted)."""
    kwargs = {"dtype": args.dtype, "num_threads": args.threads, "device": args.device}
    print(f"usermirrorer serve: {args.model} on http://{args.host}:{args.port}/v1 (Ctrl-C stops)", flush=True)
    serve(args.model, host=args.host, port=args.port, served_model_name=args.served_model_name,
          batch_window_s=args.batch_window_ms / 1000.0, max_batch=args.max_batch_size, backend_kwargs=kwargs)
    return 0
