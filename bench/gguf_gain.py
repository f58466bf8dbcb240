"""The gain kept by every file of an `edgerlhf export POLICY --gguf all DIR` folder, measured again with another
loader or more samples (prints measured numbers; not a test):

    python bench/gguf_gain.py POLICY DIR [--loader llama.cpp] [--samples 4] [--prompts 0]

`--loader llama.cpp` needs llama-cpp-python importable (it compiles llama.cpp; not an EdgeRLHF dependency). Writes
DIR/table-<loader>.md beside the export's own table.
"""
import argparse
import json
import time
from pathlib import Path

from edgerlhf.stages.deploy import delta_kept_rows, gguf_table, measure_gain


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("policy")
    ap.add_argument("dir")
    ap.add_argument("--loader", default="auto")
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.dir)
    rows = json.loads((out / "results.json").read_text())
    t0 = time.perf_counter()
    gains, why = measure_gain(args.policy, [(Path(r["file"]), Path(r["adapter"]) if r["adapter"] else None)
                                            for r in rows], loader=args.loader, samples=args.samples,
                              num_prompts=args.prompts, progress=False)
    if not gains:
        raise SystemExit(why)
    for r, g in zip(rows, gains):
        r.update({k: v for k, v in g.items() if k.startswith(("eval/", "source/")) or
                  k in ("file_loader", "prompts", "samples_per_prompt", "scores")})
        r.pop("delta_kept", None)
    delta_kept_rows(rows)  # over the control rows (the SFT policy at q8_0 / q4_0), measured the same way
    table = gguf_table(rows)
    loader = gains[0]["file_loader"].split(" ")[0]
    (out / f"table-{loader}.md").write_text(table + "\n")
    print(table)
    print(f"\nmeasured in {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
