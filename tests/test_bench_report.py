"""bench/report.py: the performance table from the benchmarks' JSON lines."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from report import read, report  # noqa: E402

from styleblend.config import load_recipe  # noqa: E402

CARD = "NVIDIA H200"


def lines(tmp_path, rows):
    path = tmp_path / "results.jsonl"
    path.write_text("log line that is not JSON\n" + "".join(json.dumps(r) + "\n" for r in rows))
    return read(path)


def test_ratios_minutes_and_missing_values(tmp_path):
    image = "StyleBlend image 768² 30 steps"
    rows = lines(tmp_path, [
        {"impl": "jittor", "dtype": "float16", "batch": 4, "ms_per_step": 80.0, "peak_gpu_mb": 4000.0, "device": CARD},
        {"impl": "diffusers", "dtype": "float16", "batch": 4, "ms_per_step": 40.0, "peak_gpu_mb": 3000.0,
         "device": CARD},
        {"impl": "jittor", "what": image, "dtype": "float16", "memory": False, "seconds": 3.0, "peak_gpu_mb": 12000.0,
         "sdedit_minutes": 0.9, "device": CARD},
        {"impl": "jittor", "what": image, "dtype": "float16", "memory": True, "seconds": 99.0, "peak_gpu_mb": 12000.0,
         "jittor_live_peak_mb": 6000, "jittor_largest_vars": [[576, "float16[2,256,768,768]"]], "device": CARD},
        {"impl": "diffusers", "what": image, "dtype": "float16", "memory": False, "seconds": 1.2,
         "peak_gpu_mb": 8000.0, "device": CARD},
        {"dtype": "float32", "memory": False, "textual_inversion_ms": 240.0, "unet_lora_ms": 300.0,
         "text_encoder_lora_ms": 120.0, "peak_gpu_mb": 50000.0, "device": CARD},
        {"impl": "diffusers", "dtype": "float32", "textual_inversion_ms": 80.0, "unet_lora_ms": 75.0,
         "text_encoder_lora_ms": 90.0, "peak_gpu_mb": 7000.0, "device": CARD},
    ])
    table = report(rows)
    assert f"Card: {CARD}" in table
    assert "| 80.0 | 40.0 | 2.00× |" in table
    assert "| 3.00 | 1.20 | 2.50× |" in table  # the --memory run (99 s) is not the timing
    recipe = load_recipe()
    minutes = (240 * recipe.fine.ti_steps + 300 * recipe.fine.lora_steps + 120 * recipe.coarse.steps) / 60000 + 0.9
    assert f"**one style, ours (float32 training)** | | | | | | **{minutes:.1f}**" in table
    assert f"| unet lora | float32 | 300.0 | 75.0 | 4.00× | {recipe.fine.lora_steps} |" in table
    assert "jittor float32 50000 MiB; diffusers float32 7000 MiB" in table
    assert "float16 |" not in table.split("| one style")[1].split("SDEdit")[0]  # no float16 training measured
    assert "| 6000 | 576 float16[2,256,768,768] |" in table
    float32_unet = next(line for line in table.splitlines() if line.startswith("| UNet step") and "float32" in line)
    assert float32_unet.count("–") == 5


def test_allocator_settings_are_a_table_of_their_own_beside_the_default(tmp_path):
    """Runs under other Jittor allocator flags or with jt.gc() are compared with the default run, and never replace
    it in the main table."""
    image = "StyleBlend image 768² 30 steps"
    base = {"impl": "jittor", "what": image, "dtype": "float16", "memory": False, "device": CARD}
    rows = lines(tmp_path, [
        dict(base, seconds=2.7, peak_gpu_mb=12700.0),
        dict(base, seconds=9.9, peak_gpu_mb=7100.0, allocator="use_sfrl_allocator=0"),
        dict(base, seconds=2.8, peak_gpu_mb=11000.0, gc=True),
    ])
    table = report(rows)
    main = next(line for line in table.splitlines() if line.startswith(f"| {image} (s) | float16"))
    assert "| 2.70 |" in main and "| 12700 |" in main
    assert "| default | 2.70 | 12700 |" in table
    assert "| use_sfrl_allocator=0 | 9.90 | 7100 |" in table
    assert "| jt.gc() after each image | 2.80 | 11000 |" in table


def test_sum_is_open_while_a_part_is_missing(tmp_path):
    rows = lines(tmp_path, [{"dtype": "float32", "textual_inversion_ms": 240.0, "unet_lora_ms": 300.0,
                             "text_encoder_lora_ms": 120.0, "peak_gpu_mb": 1.0, "device": CARD}])
    assert "| **one style, ours (float32 training)** | | | | | | **–** | |" in report(rows)


def test_missing_results_file_is_named(tmp_path, monkeypatch, capsys):
    import report as module
    monkeypatch.setattr(sys, "argv", ["report.py", str(tmp_path / "none.jsonl")])
    with pytest.raises(SystemExit, match="none.jsonl"):
        module.main()


def test_run_sh_collects_each_benchmark_line_and_keeps_an_existing_results_file(tmp_path):
    """bench/run.sh's plumbing, with a stand-in interpreter: each benchmark process's last line is collected in
    order, the warm-up process's is not, the table comes last, and an existing results file is refused."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    stand_in = tmp_path / "python"
    stand_in.write_text(f"""#!/usr/bin/env bash
case "$1" in
  -m) exit 0 ;;                                   # writing the random model
  bench/report.py) exec {sys.executable} "$@" ;;  # the real table
esac
echo "a log line"
echo "{{\\"script\\": \\"$1\\", \\"args\\": \\"${{*:2}}\\"}}"
""")
    stand_in.chmod(0o755)
    results = tmp_path / "results.jsonl"
    env = {"PATH": "/usr/bin:/bin", "JITTOR_PYTHON": str(stand_in), "TORCH_PYTHON": str(stand_in),
           "MODEL": str(tmp_path / "model")}
    run = subprocess.run(["bash", str(root / "bench" / "run.sh"), str(results)], env=env, capture_output=True,
                         text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    scripts = [r["script"] for r in rows]
    assert scripts[:4] == ["bench/unet_step.py"] * 4 and scripts.count("bench/train_step.py") == 6
    assert "--steps 1" not in rows[0]["args"]  # the untimed warm-up process is not a result
    assert {r["args"].split("--impl ")[1].split()[0] for r in rows[:4]} == {"jittor", "diffusers"}
    train = [r["args"] for r in rows if r["script"] == "bench/train_step.py" and "--memory" not in r["args"]]
    assert sum("--impl diffusers" in args for args in train) == 2  # each dtype's baseline in the same run
    swept = [r["args"] for r in rows if r["script"] == "bench/styleblend_image.py" and "--allocator " in r["args"]]
    assert len(set(swept)) == len(swept) >= 2 and "--gc" in rows[-1]["args"]  # each flag in its own process
    assert len(rows) == 15 + len(swept) + 1 and run.stdout.rstrip().endswith("|")  # the table printed last
    before = results.read_text()
    again = subprocess.run(["bash", str(root / "bench" / "run.sh"), str(results)], env=env, capture_output=True,
                           text=True, cwd=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr and results.read_text() == before
