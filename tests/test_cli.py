"""The command line, run as a user would."""

import subprocess
import sys

import striate


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "striate.cli", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


def test_compile_writes_a_loadable_program(tmp_path):
    out = tmp_path / "lenet.stp"
    result = run("compile", "lenet-digits", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "features.0" in result.stdout
    program = striate.load_program(out)
    assert len(program.layers) == 4 and program.metadata["model"] == "lenet-digits"


MODEL_FILE = '''
import numpy as np
import torch.nn as nn

def model():
    net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 3))
    return net.eval()

def calibration():
    return np.random.default_rng(0).random((16, 2, 6, 6)).astype(np.float32)
'''


def test_compile_a_model_file(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(MODEL_FILE)
    result = run("compile", str(path), "-o", str(tmp_path / "tiny.stp"))
    assert result.returncode == 0, result.stderr
    assert [l.pool for l in striate.load_program(tmp_path / "tiny.stp").layers] == ["avg", "none"]
    (tmp_path / "bad.py").write_text("def model():\n    return None\n")
    result = run("compile", str(tmp_path / "bad.py"), "-o", str(tmp_path / "bad.stp"))
    assert result.returncode == 2
    assert result.stderr.endswith("must define calibration()\n")


def test_user_errors_are_one_line_without_traceback(tmp_path):
    result = run("compile", "resnet", "-o", str(tmp_path / "x.stp"))
    assert result.returncode == 2
    assert result.stderr == ("striate: error: model must be one of ['lenet-digits'] or a Python "
                             "file defining model() and calibration(), not 'resnet'\n")
    (tmp_path / "junk.stp").write_bytes(b"junk")
    result = run("simulate", str(tmp_path / "junk.stp"))
    assert result.returncode == 2 and "is not a striate program" in result.stderr
    assert "Traceback" not in result.stderr


def test_simulate_and_report(tmp_path):
    prog = tmp_path / "lenet.stp"
    assert run("compile", "lenet-digits", "-o", str(prog)).returncode == 0
    result = run("simulate", str(prog), "--images", "20")
    assert result.returncode == 0, result.stderr
    assert "bit-exact:             20/20 images, every layer" in result.stdout
    assert "cycles/image:          15,808; utilization 94.4% of 64 MACs/cycle" in result.stdout
    out = tmp_path / "report"
    result = run("report", str(prog), "-o", str(out), "--images", "5")
    assert result.returncode == 0, result.stderr
    for name in ("report.md", "report.html", "feature_maps.png", "layer0_features_0.png"):
        assert (out / name).stat().st_size > 500, name
    assert (out / "feature_maps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "| features.4 | features.4, features.5, features.6, features.7 | conv 5x5/1 + max" in md
    assert "conv 5x5/1 (unfolded on the host) + max pool 2x2" in md


def test_demo_prints_the_verdict_and_writes_the_report(tmp_path):
    result = run("demo", "-o", str(tmp_path / "lenet.stp"), "--report", str(tmp_path / "r"),
                 "--images", "40")
    assert result.returncode == 0, result.stderr
    assert "bit-exact:             40/40 images, every layer" in result.stdout
    assert "int8 golden accuracy:  " in result.stdout and "float accuracy:        " in result.stdout
    assert (tmp_path / "r" / "feature_maps.png").exists()
