"""Print the pip requirements of the lowest declared transformers / peft releases (from pyproject.toml) with the
tokenizers and huggingface_hub releases those need; `make test-model-versions` installs them beside the venv."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

# What each lowest release needs of its own dependencies (installed with --no-deps, so named here):
# transformers 4.56 requires tokenizers >=0.22,<=0.23.0 and huggingface-hub >=0.34,<1.0.
COMPANIONS = {"transformers": ["tokenizers>=0.22,<0.23", "huggingface_hub>=0.34,<1.0"]}


def main() -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    reqs = project["optional-dependencies"]["ml"]
    out = []
    for name in ("transformers", "peft"):
        spec = next(r for r in reqs if re.match(rf"{name}\b", r))
        low = re.search(r">=\s*([\w.]+)", spec)
        if low is None:
            raise SystemExit(f"{name}: no lower bound in pyproject.toml ({spec!r})")
        out.append(f"{name}=={low.group(1)}")
        out += COMPANIONS.get(name, [])
    print(" ".join(out))


if __name__ == "__main__":
    main()
