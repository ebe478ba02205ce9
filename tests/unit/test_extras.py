"""Without an optional extra, the feature that needs it says in one line what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT


def _run_hiding(modules: list[str], code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where ``modules`` cannot be imported."""
    hide = f"import sys; sys.modules.update(dict.fromkeys({modules!r}))"
    return subprocess.run(
        [sys.executable, "-c", f"{hide}\n{code}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_lcm_lite_convert_without_the_convert_extra_names_it(tmp_path):
    run = _run_hiding(
        ["torch", "diffusers"],
        "from conversion.__main__ import main; sys.exit(main(['SimianLuo/LCM_Dreamshaper_v7', "
        "'out']))",
        tmp_path,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1, run.stderr
    assert "(torch, diffusers missing)" in run.stderr
    assert 'pip install "lcm-lite[convert]"' in run.stderr
    assert not (tmp_path / "out").exists()


def test_lcm_lite_convert_help_works_without_the_convert_extra(tmp_path):
    run = _run_hiding(
        ["torch", "diffusers", "transformers"],
        "from conversion.__main__ import main; sys.exit(main(['--help']))",
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "--weights" in run.stdout


def test_a_lora_without_the_lora_extra_names_it(tmp_path, tiny_ov_dir):
    (tmp_path / "style.safetensors").write_bytes(b"\0" * 16)
    run = _run_hiding(
        ["safetensors"],
        "from lcm_lite.cli import main; sys.exit(main(['a fox', '--model', "
        f"{str(tiny_ov_dir)!r}, '--lora', 'style.safetensors', '--no-cache']))",
        tmp_path,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [
        "lcm-lite: error: a LoRA adapter needs the [lora] extra (safetensors missing): "
        'pip install "lcm-lite[lora]"'
    ]
    assert list(tmp_path.glob("*.png")) == []


def test_lcm_lite_quantize_without_the_quantize_extra_names_it(tmp_path, tiny_ov_dir):
    run = _run_hiding(
        ["nncf"],
        f"from lcm_lite.cli import main; sys.exit(main(['quantize', {str(tiny_ov_dir)!r}, 'q']))",
        tmp_path,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [
        "lcm-lite: error: lcm-lite quantize needs the [quantize] extra (nncf missing): "
        'pip install "lcm-lite[quantize]"'
    ]
    assert not (tmp_path / "q").exists()
