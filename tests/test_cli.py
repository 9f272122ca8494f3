"""The command line, run as a user would."""

import subprocess
import sys

import numpy as np
import pytest

import striate
from striate.sw.cli import main


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
    assert result.stderr.endswith("must define calibration() (or give --calibration-data "
                                  "FILE.npy)\n")


def test_user_errors_are_one_line_without_traceback(tmp_path):
    result = run("compile", "resnet", "-o", str(tmp_path / "x.stp"))
    assert result.returncode == 2
    assert result.stderr == ("striate: error: model must be one of ['lenet-digits', "
                             "'dscnn-digits', 'tdnn-digits'] or a Python file defining model() "
                             "and calibration(), not 'resnet'\n")
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
    assert "cycles/image:          15,381; utilization 97.0% of 64 MACs/cycle" in result.stdout
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


@pytest.mark.parametrize("name", ["dscnn-digits", "tdnn-digits"])
def test_demo_runs_any_registered_model(tmp_path, name):
    result = run("demo", "--model", name, "--report", str(tmp_path / "r"), "--images", "8",
                 "-o", str(tmp_path / f"{name}.stp"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"striate demo: {name}, 16x4 PE array")
    assert "bit-exact:             8/8 images, every layer" in result.stdout
    assert striate.load_program(tmp_path / f"{name}.stp").metadata["model"] == name
    result = run("demo", "--model", "resnet")
    assert result.returncode == 2 and "--model must be one of ['lenet-digits', " in result.stderr


# A user's own model and data, run in-process through `main` (the tests above run the installed
# command as a subprocess).

USER_MODEL = '''
import numpy as np
import torch
import torch.nn as nn

def model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 3 * 4, 5))
    return net.eval()

def calibration():
    return np.random.default_rng(0).random((16, 2, 10, 12)).astype(np.float32)
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A program compiled from a model file with 2 x 10 x 12 inputs, and data files for it."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "net.py").write_text(USER_MODEL)
    prog = folder / "net.stp"
    assert main(["compile", str(folder / "net.py"), "-o", str(prog)]) == 0
    x = np.random.default_rng(1).random((4, 2, 10, 12)).astype(np.float32)
    y = np.array([0, 1, 2, 3])
    np.save(folder / "x.npy", x)
    np.savez(folder / "xy.npz", x=x, y=y)
    return folder, prog, x, y


def test_simulate_a_user_model_on_its_own_data(user, capsys):
    folder, prog, x, y = user
    capsys.readouterr()
    program = striate.load_program(prog)
    assert "dataset" not in program.metadata
    assert main(["simulate", str(prog), "--data", str(folder / "x.npy")]) == 0
    out = capsys.readouterr().out
    assert f"inputs:                4 float inputs from {folder / 'x.npy'}, quantized" in out
    assert "bit-exact:             4/4 images, every layer (verilator backend)" in out
    assert "accuracy" not in out and "cycles/image:" in out and "utilization" in out

    assert main(["simulate", str(prog), "--data", str(folder / "xy.npz"), "--images", "3"]) == 0
    out = capsys.readouterr().out
    assert "bit-exact:             3/3 images, every layer" in out
    golden = program.run_reference(program.quantize_input(x[:3])).reshape(3, -1).argmax(1)
    accuracy = np.mean(golden == y[:3])
    assert f"int8 golden accuracy:  {accuracy:.4f}" in out
    assert f"RTL accuracy:          {accuracy:.4f} (verilator backend)" in out

    np.save(folder / "q.npy", program.quantize_input(x))        # int8: used as it is
    assert main(["simulate", str(prog), "--data", str(folder / "q.npy")]) == 0
    out = capsys.readouterr().out
    assert "4 int8 inputs from" in out and "bit-exact:             4/4 images, every layer" in out

    assert main(["simulate", str(prog), "--random", "3"]) == 0
    out = capsys.readouterr().out
    assert "inputs:                3 random int8 inputs from seed 0" in out
    assert "bit-exact:             3/3 images, every layer" in out


def test_report_on_user_data(user, capsys):
    folder, prog, x, y = user
    capsys.readouterr()
    out_dir = folder / "report"
    assert main(["report", str(prog), "-o", str(out_dir), "--data", str(folder / "xy.npz")]) == 0
    out = capsys.readouterr().out
    assert "bit-exact:             4/4 images, every layer" in out
    assert out.rstrip().endswith("with the feature maps of label 0")
    for name in ("report.md", "report.html", "feature_maps.png", "layer0_0.png"):
        assert (out_dir / name).stat().st_size > 500, name
    md = (out_dir / "report.md").read_text()
    assert "4 float inputs from" in md and "bit-exact 4/4 (every layer)" in md
    assert main(["report", str(prog), "-o", str(folder / "r2"), "--random", "2"]) == 0
    out = capsys.readouterr().out
    assert "bit-exact:             2/2 images, every layer" in out
    assert out.rstrip().endswith("with the feature maps of the first input")


BAD_DATA = {
    "missing.npy": (None, "data file {} does not exist"),
    "x.csv": (b"1,2\n", "data file {} must be a .npy or .npz file, not '.csv'"),
    "text.npy": (b"hello", "data file {} must be a NumPy .npy or .npz file (np.save, np.savez), "
                           "not a file starting with b'hello'"),
    "shape.npy": (np.zeros((3, 1, 10, 12), np.float32),
                  "data file {} must be N x 2 x 10 x 12 for this program, not 3 x 1 x 10 x 12"),
    "one.npy": (np.zeros((2, 10, 12), np.float32), "data file {} must be N x 2 x 10 x 12 for "
                "this program, not 2 x 10 x 12 (save one input as 1 x 2 x 10 x 12)"),
    "nan.npy": (np.full((2, 2, 10, 12), np.nan, np.float32),
                "data file {} must be free of NaN, found 480 NaN"),
    "uint8.npy": (np.zeros((2, 2, 10, 12), np.uint8),
                  "data file {} must hold float inputs (quantized at the program's input scale) "
                  "or int8 inputs (used as they are), not uint8"),
    "keys.npz": ({"images": np.zeros((2, 2, 10, 12)), "labels": np.zeros(2, int)},
                 "data file {} must hold arrays named 'x' (inputs) and optionally 'y' (labels), "
                 "not 'images', 'labels'"),
    "labels.npz": ({"x": np.zeros((2, 2, 10, 12)), "y": np.array([1, 7])},
                   "data file {}: labels 'y' must be 2 integers in 0..4, not values 1..7"),
    "empty.npy": (np.zeros((0, 2, 10, 12), np.float32),
                  "data file {} must hold at least one input, not 0 x 2 x 10 x 12"),
}


@pytest.mark.parametrize("name", list(BAD_DATA))
def test_bad_data_is_a_one_line_error(user, capsys, name):
    folder, prog, _, _ = user
    content, message = BAD_DATA[name]
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    elif content is not None:
        np.save(path, content)
    capsys.readouterr()
    assert main(["simulate", str(prog), "--data", str(path)]) == 2
    assert capsys.readouterr().err == f"striate: error: {message.format(path)}\n"


def test_a_program_without_a_data_set_needs_inputs(user, capsys):
    _, prog, _, _ = user
    capsys.readouterr()
    assert main(["simulate", str(prog)]) == 2
    assert capsys.readouterr().err == (f"striate: error: {prog} was compiled with no data set to "
                                       "run on; give its inputs with --data FILE (.npy or .npz) "
                                       "or --random N\n")
    assert main(["report", str(prog), "--random", "0"]) == 2
    assert "--random must be a positive number of inputs, not 0" in capsys.readouterr().err


CONV3D_MODEL = '''
import numpy as np
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(2, 4, 3)

    def forward(self, x):
        return self.conv1(x).relu()

def model():
    return Net().eval()

def calibration():
    return np.zeros((4, 2, 6, 6, 6), np.float32)
'''

BAD_MODELS = {
    "conv3d.py": (CONV3D_MODEL, "Conv3d at 'conv1' is not supported: 3-D layers are not "
                                "supported yet"),
    "imports.py": ("import no_such_module_here\n", "model file {}: ModuleNotFoundError: No module "
                                                   "named 'no_such_module_here'"),
    "nomodel.py": ("def calibration():\n    return None\n", "model file {} must define model()"),
    "raises.py": ("def model():\n    raise OSError('net.pt is missing')\n"
                  "def calibration():\n    return None\n",
                  "model file {}: model() raised OSError: net.pt is missing"),
    "types.py": ("def model():\n    return 'net'\ndef calibration():\n    return None\n",
                 "model file {}: model() must return a torch.nn.Module, not str"),
    "calib.py": ("import torch.nn as nn\ndef model():\n    return nn.Conv2d(2, 4, 3)\n"
                 "def calibration():\n    return 'images'\n",
                 "model file {}: calibration() must return an N x C x H x W, N x C x L or N x F array "
                 "of real numbers, not str"),
}


@pytest.mark.parametrize("name", list(BAD_MODELS))
def test_a_model_file_the_compiler_cannot_take_is_a_one_line_error(tmp_path, capsys, name):
    source, message = BAD_MODELS[name]
    path = tmp_path / name
    path.write_text(source)
    assert main(["compile", str(path), "-o", str(tmp_path / "x.stp")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"striate: error: {message.format(path)}") and err.count("\n") == 1
    assert not (tmp_path / "x.stp").exists()


def test_calibration_data_file(user, tmp_path, capsys):
    folder, _, x, _ = user
    path = tmp_path / "nocal.py"
    path.write_text(USER_MODEL.split("def calibration")[0])
    assert main(["compile", str(path), "-o", str(tmp_path / "a.stp")]) == 2
    assert capsys.readouterr().err.endswith(
        "must define calibration() (or give --calibration-data FILE.npy)\n")
    assert main(["compile", str(path), "-o", str(tmp_path / "a.stp"),
                 "--calibration-data", str(folder / "x.npy")]) == 0
    program = striate.load_program(tmp_path / "a.stp")
    assert program.graph.input_shape == (2, 10, 12)
    np.save(tmp_path / "q.npy", np.zeros((2, 2, 10, 12), np.int8))
    assert main(["compile", str(path), "-o", str(tmp_path / "b.stp"),
                 "--calibration-data", str(tmp_path / "q.npy")]) == 2
    assert capsys.readouterr().err == (f"striate: error: calibration data file {tmp_path / 'q.npy'}"
                                       " must hold float N x C x H x W images, not int8\n")


def test_a_mismatch_is_reported_and_fails(user, capsys, monkeypatch):
    from striate.sw.runtime import driver
    folder, prog, _, _ = user
    real_open = driver.open

    def corrupting_open(*args, **kwargs):       # the second layer of the first input is off by 1
        device = real_open(*args, **kwargs)
        real_run = device.run

        def run(program, xq, **options):
            outs = real_run(program, xq, **options)
            outs[1][0].flat[0] ^= 1
            return outs
        device.run = run
        return device

    monkeypatch.setattr(driver, "open", corrupting_open)
    capsys.readouterr()
    assert main(["simulate", str(prog), "--random", "3"]) == 1
    out = capsys.readouterr().out
    assert "bit-exact:             2/3 images, every layer" in out
    assert "  MISMATCH 3: differs from the golden model on 1 of 3 inputs\n" in out
