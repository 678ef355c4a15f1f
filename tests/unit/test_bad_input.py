"""Bad input a newcomer meets first: a model not built yet, an unreachable hub, empty or malformed data files.

Each is one line, exit 2, in seconds, before Ray starts (cli.main returns before run_stage is reached).
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest

from openrs_ray.cli import main
from openrs_ray.config import ConfigError, DataConfig, check_hub, check_paths, load_config
from openrs_ray.config.paths import check_data_file, local_format
from openrs_ray.data.sources import DataError, load_rows
from tests.conftest import REPO

SMOKE = REPO / "configs" / "smoke.yaml"


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real hub client against a closed local port (connection refused at once), no cached model."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", "/nonexistent-hf-cache")


def _train(capsys: pytest.CaptureFixture[str], *overrides: str) -> tuple[int, str]:
    start = time.monotonic()
    rc = main(["train", str(SMOKE), *overrides])
    assert time.monotonic() - start < 15  # seconds, not the hub loader's minute of retries
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line
    return rc, err


def test_tiny_model_not_built_yet(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a fresh clone: no runs/ folder at all
    rc, err = _train(capsys, "model.path=runs/tiny-model", f"data.path={REPO / 'configs/data/gsm8k_mini.jsonl'}")
    assert rc == 2 and err == (
        "openrs-ray: error: model.path: no Hugging Face model (config.json) at runs/tiny-model: the folder does "
        "not exist (a tiny test model is built with `openrs-ray make-tiny-model runs/tiny-model`)\n"
    )
    assert not (tmp_path / "runs").exists()  # nothing was started or written


def test_unreachable_hub_id(capsys, unreachable_hub, tiny_model: Path) -> None:
    rc, err = _train(capsys, "model.path=someone/no-such-model")
    assert rc == 2
    assert err.startswith(
        "openrs-ray: error: model.path: someone/no-such-model is not a local folder, and as a hub model id: "
        "the hub cannot be reached ("
    )
    rc, err = _train(capsys, f"model.path={tiny_model}", "data.path=someone/no-such-dataset")
    assert (
        rc == 2
        and err.startswith(
            "openrs-ray: error: data.path: someone/no-such-dataset is not a local file, and as a hub dataset: the hub "
            "cannot be reached ("
        )
        and err.endswith("a cached copy is read with HF_HUB_OFFLINE=1)\n")
    )


def test_offline_hub_id(monkeypatch: pytest.MonkeyPatch, unreachable_hub) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cfg = load_config(SMOKE, ["model.path=Qwen/Qwen2.5-0.5B-Instruct"])
    check_paths(cfg)  # the local check leaves hub ids alone
    with pytest.raises(ConfigError, match=r"^model.path: Qwen/Qwen2.5-0.5B-Instruct .*HF_HUB_OFFLINE is set$"):
        check_hub(cfg)


def test_local_model_passes_the_hub_check(tiny_model: Path, unreachable_hub) -> None:
    check_hub(load_config(SMOKE, [f"model.path={tiny_model}"]))  # no network needed for a local folder


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", "", "is empty (no rows)"),
        ("blank.jsonl", "\n  \n", "is empty (no rows)"),
        ("empty.json", "[]", "is empty (no rows)"),
        ("bad.jsonl", '{"question": "1+1", "answer": "2"}\n{"question": "2+2", "answer": 4\n{"question": "x"}\n',
         "line 2: not valid JSON (Expecting ',' delimiter)"),
        ("bad.json", '[\n  {"problem": "p", "answer": "1"},\n  {"problem": "q" "answer": "2"}\n]\n',
         "line 3: not valid JSON (Expecting ',' delimiter)"),
        ("list.jsonl", '{"question": "a", "answer": "1"}\n[1, 2]\n', "line 2: a row must be a JSON object, got list"),
    ],
)  # fmt: skip
def test_bad_data_file_is_one_line_naming_file_and_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        check_data_file(path)
    assert str(err.value) == f"data.path: {path} {message}"
    with pytest.raises(DataError) as err:  # the loader says the same (eval files and direct use go through it)
        load_rows(DataConfig(path=str(path)))
    assert str(err.value) == f"data.path: {path} {message}"


def test_bad_data_file_exits_2_before_ray(capsys, tiny_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1", "answer": "2"}\n{oops}\n')
    rc, err = _train(capsys, f"model.path={tiny_model}", f"data.path={bad}", f"output_dir={tmp_path / 'run'}")
    assert rc == 2 and err.startswith(f"openrs-ray: error: data.path: {bad} line 2: not valid JSON")
    assert not (tmp_path / "run").exists()
    (tmp_path / "empty.jsonl").write_text("")
    rc, err = _train(capsys, f"model.path={tiny_model}", f"data.path={tmp_path / 'empty.jsonl'}")
    assert rc == 2 and err == f"openrs-ray: error: data.path: {tmp_path / 'empty.jsonl'} is empty (no rows)\n"


def test_compressed_data_files(tmp_path: Path) -> None:
    assert [local_format(p) for p in ("a.jsonl.gz", "a.json.gz", "a.parquet", "a.txt", "org/name")] == [
        "json", "json", "parquet", None, None,
    ]  # fmt: skip
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"question": "1+1", "answer": "2"}\n{"question": "3"\n'))
    with pytest.raises(ConfigError, match=r"rows.jsonl.gz line 2: not valid JSON"):
        check_data_file(path)
    path.write_bytes(gzip.compress(json.dumps({"question": "1+1", "answer": "2"}).encode() + b"\n"))
    assert load_rows(DataConfig(path=str(path))) == [{"question": "1+1", "answer": "2"}]
