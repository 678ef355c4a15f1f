"""Pre-launch checks of the files and hub ids a config names: each failure is one ConfigError line, in seconds.

`check_paths` looks only at the local disk (fast, no network); `check_hub` asks the Hugging Face hub about
model ids that are neither a local folder nor in the local cache, with a short timeout, so an unreachable
hub fails before Ray starts instead of after transformers' retries (about a minute).
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import IO, TYPE_CHECKING

from openrs_ray.config.sections import ConfigError

if TYPE_CHECKING:
    from openrs_ray.config import RunConfig

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
COMPRESSIONS = (".gz",)  # what datasets' json loader (and our own reader below) decompress by file name
HUB_TIMEOUT_S = 5.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def local_suffix(path: str | Path) -> str:
    """The file's suffix under any compression suffix: .json for rows.json.gz."""
    name = Path(path).name
    for comp in COMPRESSIONS:
        name = name.removesuffix(comp)
    return Path(name).suffix


def local_format(path: str | Path) -> str | None:
    """datasets' loader name for a local data file (json, parquet; .json.gz and .jsonl.gz too), else None."""
    return LOCAL_FORMATS.get(local_suffix(path))


def _open_text(path: Path) -> IO[str]:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def check_data_file(path: Path, key: str = "data.path") -> None:
    """One line naming the file (and the line) for a data file datasets would fail on with a traceback:
    empty, not JSON, a malformed JSON line, or a parquet file without rows."""
    try:
        if local_format(path) == "parquet":
            import pyarrow.parquet as pq

            if pq.read_metadata(path).num_rows == 0:
                raise ConfigError(f"{key}: {path} is empty (no rows)")
            return
        with _open_text(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise ConfigError(f"{key}: cannot read {path}: {err}") from None
    except ConfigError:
        raise
    except Exception as err:  # pyarrow's own errors: not a parquet file
        raise ConfigError(f"{key}: cannot read {path}: {str(err).splitlines()[0]}") from None
    if not text.strip():
        raise ConfigError(f"{key}: {path} is empty (no rows)")
    try:
        data = json.loads(text)  # one JSON document: a list of rows (datasets also takes a mapping)
        if isinstance(data, list) and not data:
            raise ConfigError(f"{key}: {path} is empty (no rows)")
        return
    except json.JSONDecodeError as whole:
        first_line_error = whole
    # Not one document: JSON Lines, one row per line (blank lines are skipped, as datasets does).
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as line_error:
            # A .json file that is neither one document nor JSON lines: where the document broke.
            bad = first_line_error if number == 1 and local_suffix(path) == ".json" else line_error
            where = bad.lineno if bad is first_line_error else number
            raise ConfigError(f"{key}: {path} line {where}: not valid JSON ({bad.msg})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{key}: {path} line {number}: a row must be a JSON object, got {type(row).__name__}")


def _is_local_ref(ref: str, runs_root: str | None) -> bool:
    """Whether a model reference names a local folder (else it may be a hub id).

    `runs/tiny-model` has a hub id's shape, so a reference under the folder runs are written to (output_dir's
    first component, e.g. runs/) counts as local even before that folder exists."""
    path = Path(ref).expanduser()
    if ref.startswith(("/", "./", "../", "~")) or path.exists() or not _HUB_ID.match(ref):
        return True
    first = ref.split("/", 1)[0]
    return "/" in ref and (Path(first).is_dir() or first == runs_root)


def _check_model(key: str, ref: str, skip_under: str | None, runs_root: str | None) -> None:
    model = Path(ref).expanduser()
    if skip_under is not None and model.resolve().is_relative_to(Path(skip_under).resolve()):
        return  # written by an earlier pipeline stage
    if model.is_dir() and not (model / "config.json").is_file():
        raise ConfigError(f"{key}: no Hugging Face model (config.json) at {model}")
    if not model.exists() and _is_local_ref(ref, runs_root):
        raise ConfigError(
            f"{key}: no Hugging Face model (config.json) at {model}: the folder does not exist (a tiny test model "
            f"is built with `openrs-ray make-tiny-model {ref}`)"
        )


def _runs_root(cfg: RunConfig) -> str | None:
    parts = Path(cfg.output_dir).parts
    return parts[0] if len(parts) > 1 and not Path(cfg.output_dir).is_absolute() else None


def check_paths(cfg: RunConfig, *, need_data: bool = True, skip_under: str | None = None) -> None:
    """Fail fast, before any actor starts, on local model/data paths that do not exist or data files that
    cannot be read (models under `skip_under` are exempt: a pipeline's earlier stages write them)."""
    runs_root = _runs_root(cfg)
    _check_model("model.path", cfg.model.path, skip_under, runs_root)
    if cfg.kd.teacher is not None:
        _check_model("kd.teacher.path", cfg.kd.teacher.path, skip_under, runs_root)
    if cfg.data is None:
        if need_data:
            raise ConfigError(f"data: stage {cfg.stage} needs a dataset (data.path)")
        return
    data = Path(cfg.data.path).expanduser()
    local = local_format(data) is not None
    if (local or cfg.data.path.startswith(("/", "./", "../", "~")) or data.exists()) and not data.is_file():
        raise ConfigError(f"data.path: file not found: {data}")
    if local:
        check_data_file(data)


def hub_problem(ref: str, repo_type: str = "model", timeout_s: float = HUB_TIMEOUT_S) -> str | None:
    """Why a hub model or dataset id cannot be used from here (None: cached, or on the hub).

    One metadata request with a short timeout: the loaders themselves retry an unreachable hub for 25-55 s."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if repo_type == "model" and isinstance(try_to_load_from_cache(ref, "config.json"), str):
        return None
    if constants.HF_HUB_OFFLINE:  # datasets finds its own cache then; a model not in the cache cannot load
        return "not in the local Hugging Face cache, and HF_HUB_OFFLINE is set" if repo_type == "model" else None
    try:
        HfApi().repo_info(ref, repo_type=repo_type, timeout=timeout_s)
    except GatedRepoError:
        return None  # it exists; the loader says whether this login may read it
    except RepositoryNotFoundError:
        return f"no such {repo_type} on the Hugging Face hub (or it is private)"
    except Exception as err:  # DNS, refused connection, timeout, proxy: the hub is out of reach
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return f"the hub cannot be reached ({reason[:160]}; a cached copy is read with HF_HUB_OFFLINE=1)"
    return None


def check_hub(cfg: RunConfig, *, skip_under: str | None = None) -> None:
    """The hub ids of the config (model, kd teacher, data) are cached or reachable: one line in seconds if not."""
    refs = [("model.path", cfg.model.path)] + ([("kd.teacher.path", cfg.kd.teacher.path)] if cfg.kd.teacher else [])
    for key, ref in refs:
        local = Path(ref).expanduser()
        if local.exists() or (skip_under and local.resolve().is_relative_to(Path(skip_under).resolve())):
            continue
        problem = hub_problem(ref)
        if problem is not None:
            raise ConfigError(f"{key}: {ref} is not a local folder, and as a hub model id: {problem}")
    if cfg.data is not None and local_format(cfg.data.path) is None and not Path(cfg.data.path).exists():
        problem = hub_problem(cfg.data.path, "dataset")
        if problem is not None:
            raise ConfigError(f"data.path: {cfg.data.path} is not a local file, and as a hub dataset: {problem}")
