"""Times registry cases in PyTorch, in a process of its own.

Run by :mod:`numbanet.bench.compare` so that PyTorch's and Numba's thread
pools never compete for the cores. Reads a JSON request on stdin:
``{"threads": T, "repeat": R, "budget": S, "items": [[case, dtype], ...]}`` and
writes one JSON line per item to stdout.
"""

from __future__ import annotations

import json
import sys

from .registry import get
from .timing import first_call, measure


def main() -> None:
    req = json.load(sys.stdin)
    import torch

    torch.set_num_threads(int(req["threads"]))
    for name, dtype in req["items"]:
        case = get(name)
        rec = {"case": name, "dtype": dtype, "torch_version": torch.__version__}
        try:
            fn = case.torch_bind(case.inputs(dtype))
            first_call(fn)
            rec.update(measure(fn, req["repeat"], req["budget"], cpu_time=req.get("cpu_time", False)))
        except Exception as exc:  # reported in the table, not fatal
            rec["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
