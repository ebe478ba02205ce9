"""Module paths from before the package was split into layers still import, as the module that
took their place, with a DeprecationWarning that names it."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from lcm_lite.moved import MOVED


@pytest.mark.parametrize(("old", "new"), MOVED.items(), ids=MOVED.keys())
def test_an_old_module_path_imports_the_new_module_and_says_where_it_is(old, new):
    if old.startswith("lcm_lite.server"):
        pytest.importorskip("fastapi")  # the [serve] extra
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is now {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__name__ == new  # the new module itself, its own name and spec untouched
    assert module.__spec__.name == new


def test_names_import_from_an_old_path_in_a_fresh_interpreter():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "try:\n"
        "    from lcm_lite.scheduler import LCMScheduler\n"
        "except DeprecationWarning as warning:\n"
        "    print(warning)\n"
        "warnings.simplefilter('ignore')\n"
        "from lcm_lite.scheduler import LCMScheduler\n"
        "from lcm_lite.sampling.scheduler import LCMScheduler as New\n"
        "print(LCMScheduler is New)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.splitlines() == [
        "lcm_lite.scheduler is now lcm_lite.sampling.scheduler",
        "True",
    ]
