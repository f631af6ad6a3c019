"""Benchmark embq._quantize / dequantize against the numpy reference and torch.

Runs on random float32 data (default 1,000,000 x 300, i.e. 1.2 GB) and prints GB/s of float32
input processed (median of several repeats) and ratios to the numpy reference.  torch's
``quantize_per_channel`` is timed when torch is importable, twice: alone with the scales given,
and together with computing those scales (``amax`` per row), which is the same job embq does.

    python scripts/bench_quantize.py                    # full size
    python scripts/bench_quantize.py --rows 200000      # smaller, quicker
    python scripts/bench_quantize.py --kernels portable # the portable C variant
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _bench import median_time

from embq import _config, _kernels_common
from embq._quantize import dequantize, quantize, quantize_reference

# bench_quantize times warm calls: the first one faults in the output pages.
timeit = functools.partial(median_time, warmup=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ref-rows", type=int, default=200_000,
                    help="rows given to the slow numpy reference (its throughput is per byte)")
    ap.add_argument("--no-torch", action="store_true", help="skip torch even when installed")
    ap.add_argument("--kernels", default=None,
                    help="kernel variants to force, as EMBQ_KERNELS (e.g. portable)")
    args = ap.parse_args(argv)
    if args.kernels is not None:
        _config.set_kernels(args.kernels)

    all_threads = _kernels_common.max_threads()
    print(f"embq quantize benchmark: {args.rows:,} x {args.dim} float32, median of {args.repeats}, "
          f"{all_threads} threads available, "
          f"quantize kernels: {_config.selected_kernels()['quantize']}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    gb = x.nbytes / 1e9
    results: list[tuple[str, float]] = []

    def record(name: str, seconds: float, nbytes: float) -> float:
        rate = nbytes / 1e9 / seconds
        results.append((name, rate))
        print(f"  {name:<48s} {seconds * 1e3:9.1f} ms  {rate:7.2f} GB/s", flush=True)
        return rate

    # numpy reference on a slice (it is ~30x slower); throughput scales with bytes.
    xr = x[: min(args.ref_rows, args.rows)]
    ref_rate = record(f"numpy reference ({len(xr):,} rows)",
                      timeit(lambda: quantize_reference(xr), max(1, args.repeats // 2)), xr.nbytes)
    # Sanity: the kernel is bit-identical to the reference on that slice.
    a, b = quantize(xr), quantize_reference(xr)
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.scales, b.scales)

    thread_counts = sorted({1, all_threads})
    for nt in thread_counts:
        record(f"embq quantize, {nt} thread(s)",
               timeit(lambda nt=nt: quantize(x, n_threads=nt), args.repeats), x.nbytes)
    xf = np.asfortranarray(x[: max(1, args.rows // 4)])
    record(f"embq quantize, Fortran order, {all_threads} thread(s)",
           timeit(lambda: quantize(xf, n_threads=all_threads), args.repeats), xf.nbytes)
    x64 = x[: max(1, args.rows // 4)].astype(np.float64)
    # Throughput of float64 input counted per float32-equivalent byte for comparability.
    record(f"embq quantize, float64 input, {all_threads} thread(s)",
           timeit(lambda: quantize(x64, n_threads=all_threads), args.repeats), x64.nbytes / 2)
    xf = x64 = None  # free before the torch runs

    torch_rates: dict[str, float] = {}
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("  torch not installed: skipping torch.quantize_per_channel")
        else:
            # torch marks its quantized tensors deprecated; the benchmark still measures them.
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
            torch.set_num_threads(all_threads)
            xt = torch.from_numpy(x)
            zp = torch.full((args.rows,), 128, dtype=torch.long)

            def torch_scales():
                return (xt.abs().amax(dim=1) / 127).double().clamp_min(1e-30)

            s = torch_scales()
            torch_rates["alone"] = record(
                f"torch {torch.__version__} quantize_per_channel (scales given)",
                timeit(lambda: torch.quantize_per_channel(xt, s, zp, 0, torch.quint8),
                       args.repeats), x.nbytes)
            torch_rates["with scales"] = record(
                "torch amax + quantize_per_channel",
                timeit(lambda: torch.quantize_per_channel(xt, torch_scales(), zp, 0, torch.quint8),
                       args.repeats),
                x.nbytes)
            del xt

    q = quantize(x)
    out = np.empty_like(x)
    for nt in thread_counts:
        record(f"embq dequantize, {nt} thread(s) (GB/s of float32 out)",
               timeit(lambda nt=nt: dequantize(*q, out=out, n_threads=nt), args.repeats), x.nbytes)

    def numpy_deq():
        return np.multiply(q.codes.astype(np.float32) - np.float32(128), q.scales[:, None],
                           out=out)

    numpy_deq_rate = record("numpy dequantize", timeit(numpy_deq, args.repeats), x.nbytes)
    rows = rng.integers(0, args.rows, 100_000)
    gather_out = np.empty((len(rows), args.dim), np.float32)
    record(f"embq dequantize 100,000 random rows, {all_threads} thread(s)",
           timeit(lambda: dequantize(*q, rows=rows, out=gather_out), args.repeats),
           gather_out.nbytes)

    print("\nratios")
    rates = dict(results)
    best = rates[f"embq quantize, {all_threads} thread(s)"]
    label = f"embq quantize ({all_threads} threads) / numpy reference"
    print(f"  {label:<48s} {best / ref_rate:6.1f}x")
    one = rates["embq quantize, 1 thread(s)"]
    print(f"  {'embq quantize (1 thread) / numpy reference':<48s} {one / ref_rate:6.1f}x")
    for what, rate in torch_rates.items():
        print(f"  {f'embq quantize / torch ({what})':<48s} {best / rate:6.1f}x")
    deq = rates[f"embq dequantize, {all_threads} thread(s) (GB/s of float32 out)"]
    print(f"  {'embq dequantize / numpy dequantize':<48s} {deq / numpy_deq_rate:6.1f}x")
    print(f"\n(total input {gb:.2f} GB; timings on a shared machine are noisy)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
