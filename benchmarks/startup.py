"""Where the one-shot CLI's time goes: ``python -m lcm_lite PROMPT --model DIR`` (a warm
compiled-model cache, filled by a first run) profiled with cProfile in a fresh process, split into
imports, reading the folder and the tokenizer, importing each network from the cache, each
network's inference (the first UNet step apart) and writing the PNG; the process's wall time
beyond the profiled call is the interpreter's start and exit.

    python benchmarks/startup.py MODEL [--size 512] [--steps 4] [--runs 3]

Prints JSON: the median of each part over ``runs`` one-shots. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "a beautiful pink unicorn, 8k"
CHILD = r"""
import cProfile, inspect, json, pstats, sys, time
argv = json.loads(sys.argv[1])
profile = cProfile.Profile()
clock = time.perf_counter()
profile.enable()
from lcm_lite.cli.main import main
code = main(argv)
profile.disable()
total = time.perf_counter() - clock
from lcm_lite.models import networks
from lcm_lite.runtime import compiler
stats = pstats.Stats(profile).stats
def seconds(function, calls=False):
    code = function.__code__
    key = (code.co_filename, code.co_firstlineno, code.co_name)
    found = stats.get(key)
    return (found[1] if calls else found[3]) if found else 0.0
imports = sum(v[3] for k, v in stats.items() if k[2] == "_find_and_load" and "frozen" in k[0])
from lcm_lite.models.folder import ModelFolder
from lcm_lite.models.tokenizer import CLIPTokenizer
from lcm_lite.images.png import save_png
parts = {
    "profiled call": total,
    "imports (all, nested in what follows)": imports,
    "read the model folder": seconds(ModelFolder.open.__func__),
    "tokenizer": seconds(CLIPTokenizer.from_folder.__func__),
    "blob imports (all networks)": seconds(compiler.Compiler._import),
    "text encoder: import/compile": seconds(networks.TextEncoder.__init__),
    "UNet: import/compile": seconds(networks.UNet.__init__),
    "VAE decoder: import/compile": seconds(networks.VAEDecoder.__init__),
    "text encoder: inference": seconds(networks.TextEncoder.__call__),
    "UNet: inference, all steps": seconds(networks.UNet.__call__),
    "VAE decoder: inference": seconds(networks.VAEDecoder.__call__),
    "write the PNG": seconds(save_png),
}
print(json.dumps({"code": code, "parts": parts}))
"""


def one_shot(model: Path, size: int, steps: int, out: Path, env: dict[str, str]) -> dict:
    argv = [PROMPT, "--model", str(model), "--seed", "42", "--out", str(out), "-q"]
    argv += ["--steps", str(steps), "--width", str(size), "--height", str(size)]
    clock = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(argv)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    wall = time.perf_counter() - clock
    result = json.loads(run.stdout.strip().splitlines()[-1])
    parts = result["parts"]
    parts["process wall"] = wall
    parts["interpreter start and exit"] = wall - parts["profiled call"]
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", type=Path, help="compiled-model cache (default: a new one)")
    args = parser.parse_args()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="lcm-lite-startup-cache-"))
    env = {"LCM_LITE_CACHE": str(cache)}
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "out.png"
        one_shot(args.model, args.size, args.steps, out, env)  # fills the cache
        runs = [one_shot(args.model, args.size, args.steps, out, env) for _ in range(args.runs)]
    print(json.dumps({name: statistics.median(r[name] for r in runs) for name in runs[0]}))


if __name__ == "__main__":
    main()
