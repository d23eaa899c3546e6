"""Load test of ``segany serve``: N concurrent clients, each sending M click (predict) requests.

Starts the real command (uvicorn) on a loopback port, computes the image's embedding once,
then measures request latency seen by the clients, one client alone and N at once, with the
errors. The reference in the same run is the official predictor (``mobile_sam`` /
``segment_anything`` ``SamPredictor.predict``) called in-process on the same weights, image and
clicks: the ratio says what HTTP, JSON, RLE and queueing add to the bare decoder.

    .venv/bin/python benchmarks/serve_load.py --model vit_t --clients 8 --requests 25

Random weights are fine (``--checkpoint`` defaults to a freshly built model saved to a temporary
file): latency does not depend on weight values; ``--model classic`` needs no weights. Answers 503
(queue full) are counted apart from other errors. Last, the server is sent SIGTERM while all
clients and an "everything" job are busy, and the time until it exits is measured.
Writes benchmarks/results/serve_load.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGANY_SHARED", REPO.parent / "shared"))
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
OFFICIAL = {"vit_t": "mobile_sam", "vit_b": "segment_anything", "vit_l": "segment_anything", "vit_h": "segment_anything"}

REFERENCE_SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import tv_shim
tv_shim.install()
import numpy as np, torch
from PIL import Image
package, name, checkpoint, image_path, clicks_json, threads = sys.argv[2:8]
torch.set_num_threads(int(threads))
module = __import__(package)
predictor = module.SamPredictor(module.sam_model_registry[name](checkpoint=checkpoint).eval())
predictor.set_image(np.asarray(Image.open(image_path).convert("RGB")))
clicks = json.loads(clicks_json)
predictor.predict(np.array([clicks[0]]), np.array([1]))
times = []
for click in clicks:
    start = time.perf_counter()
    predictor.predict(np.array([click]), np.array([1]), multimask_output=True)
    times.append((time.perf_counter() - start) * 1000)
print(json.dumps(times))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan")}
    array = np.asarray(values)
    return {"p50": float(np.percentile(array, 50)), "p90": float(np.percentile(array, 90)),
            "p99": float(np.percentile(array, 99)), "max": float(array.max())}


def random_checkpoint(name: str, folder: Path) -> Path | None:
    """A freshly initialised ``name`` model saved in the official state-dict format (None for
    the weight-free classic engine)."""
    import torch

    import segany

    if name == "classic":
        return None

    torch.manual_seed(0)
    path = folder / f"{name}_random.pth"
    torch.save(segany.build_model(name).state_dict(), path)
    return path


def server_command(images: Path, args: argparse.Namespace, checkpoint: Path | None, port: int) -> list[str]:
    command = [sys.executable, "-m", "segany", "serve", str(images), "--port", str(port), "--model", args.model,
               "--annotations", str(images.parent / "coco.json")]
    return command + (["--checkpoint", str(checkpoint)] if checkpoint is not None else [])


def start_server(images: Path, args: argparse.Namespace, checkpoint: Path | None, port: int, log: Path,
                 extra: tuple[str, ...] = ()) -> subprocess.Popen:
    command = server_command(images, args, checkpoint, port) + list(extra)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)} if args.threads else None
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}:\n{log.read_text()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=2).raise_for_status()
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start within 300 s")


def click_requests(base: str, image_id: str, clicks: list[list[float]], results: list, errors: list,
                   busy: list) -> None:
    with httpx.Client(base_url=base, timeout=60) as client:
        for click in clicks:
            start = time.perf_counter()
            try:
                response = client.post(f"/api/images/{image_id}/predict",
                                       json={"points": [click], "labels": [1], "multimask": True})
                elapsed = (time.perf_counter() - start) * 1000
                if response.status_code == 503:
                    busy.append(elapsed)
                    continue
                if response.status_code != 200:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                results.append((elapsed, response.json()["decoder_ms"]))
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")


def run_clients(base: str, image_id: str, clients: int, requests: int, size: tuple[int, int], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    height, width = size
    plans = [(rng.random((requests, 2)) * [width - 1, height - 1]).tolist() for _ in range(clients)]
    results: list[tuple[float, float]] = []
    errors: list[str] = []
    busy: list[float] = []
    threads = [threading.Thread(target=click_requests, args=(base, image_id, plan, results, errors, busy))
               for plan in plans]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"clients": clients, "requests": clients * requests, "errors": len(errors), "error_samples": errors[:5],
            "busy_503": len(busy), "busy_latency_ms": percentiles(busy),
            "latency_ms": percentiles([r[0] for r in results]), "decoder_ms": percentiles([r[1] for r in results]),
            "throughput_rps": len(results) / wall}


def shutdown_under_load(process: subprocess.Popen, base: str, image_id: str, clients: int, size: tuple[int, int],
                        seed: int, busy_s: float = 1.0) -> float:
    """Seconds from SIGTERM to the server's exit while ``clients`` click and one "everything"
    job with points_per_side 64 runs (their failed answers are expected and ignored)."""
    def everything() -> None:
        try:
            httpx.post(f"{base}/api/images/{image_id}/everything", json={"points_per_side": 64}, timeout=600)
        except httpx.HTTPError:
            pass

    load = threading.Thread(target=run_clients, args=(base, image_id, clients, 1000, size, seed), daemon=True)
    heavy = threading.Thread(target=everything, daemon=True)
    heavy.start()
    load.start()
    time.sleep(busy_s)
    start = time.perf_counter()
    process.terminate()
    process.wait(600)
    return time.perf_counter() - start


def reference_latency(args: argparse.Namespace, checkpoint: Path, image: Path, clicks: list[list[float]]) -> dict | None:
    package = OFFICIAL.get(args.model)
    if package is None or not BENCH_PYTHON.exists() or not (SHARED / "reference" / "tv_shim.py").exists():
        return None
    command = [str(BENCH_PYTHON), "-c", REFERENCE_SCRIPT, str(SHARED / "reference"), package, args.model,
               str(checkpoint), str(image), json.dumps(clicks), str(args.threads or os.cpu_count() or 1)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"reference failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return {"package": package, "latency_ms": percentiles(json.loads(done.stdout.strip().splitlines()[-1]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_t", help="zoo name or JSON config (default vit_t)")
    parser.add_argument("--checkpoint", default=None, help="weights (default: random weights, saved to a temp file)")
    parser.add_argument("--image", default=str(REPO / "examples" / "shapes.png"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="predict requests per client")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the server and the reference "
                                                               "(default: torch's own choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "serve_load.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="segany-load-") as tmp:
        tmp_path = Path(tmp)
        images = tmp_path / "images"
        images.mkdir()
        shutil.copy(args.image, images / Path(args.image).name)
        checkpoint = Path(args.checkpoint) if args.checkpoint else random_checkpoint(args.model, tmp_path)
        port = free_port()
        log = tmp_path / "server.log"
        process = start_server(images, args, checkpoint, port, log)
        base = f"http://127.0.0.1:{port}"
        try:
            image = httpx.get(f"{base}/api/images").json()[0]
            start = time.perf_counter()
            httpx.post(f"{base}/api/images/{image['id']}/embedding", params={"wait": True}, timeout=600).raise_for_status()
            embedding_ms = (time.perf_counter() - start) * 1000
            detail = httpx.get(f"{base}/api/images/{image['id']}").json()
            size = (detail["height"], detail["width"])
            run_clients(base, image["id"], 1, 3, size, args.seed + 99)  # warm-up
            alone = run_clients(base, image["id"], 1, args.requests, size, args.seed)
            loaded = run_clients(base, image["id"], args.clients, args.requests, size, args.seed + 1)
            exit_s = shutdown_under_load(process, base, image["id"], args.clients, size, args.seed + 2)
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(30)
        rng = np.random.default_rng(args.seed)
        clicks = (rng.random((args.requests, 2)) * [size[1] - 1, size[0] - 1]).tolist()
        reference = reference_latency(args, checkpoint, images / Path(args.image).name, clicks)

    report = {
        "model": args.model, "image": Path(args.image).name, "image_size": list(size), "embedding_ms": embedding_ms,
        "one_client": alone, "concurrent": loaded, "reference_in_process": reference,
        "exit_after_sigterm_under_load_s": exit_s,
        "machine": {"cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0], "platform": platform.platform(),
                    "python": platform.python_version()},
        "threads": args.threads or "torch default",
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1))

    print(f"segany serve load test: {args.model}, {Path(args.image).name} {size[1]}x{size[0]}, "
          f"embedding {embedding_ms:.0f} ms, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f})")
    print(f"| {'scenario':<34} | {'requests':>8} | {'errors':>6} | {'503':>5} | {'p50 ms':>7} | {'p99 ms':>7} | "
          f"{'max ms':>7} | {'req/s':>6} |")
    print(f"|{'-' * 36}|{'-' * 9}:|{'-' * 7}:|{'-' * 6}:|{'-' * 8}:|{'-' * 8}:|{'-' * 8}:|{'-' * 7}:|")
    rows = [("HTTP, 1 client", alone), (f"HTTP, {args.clients} concurrent clients", loaded)]
    for name, result in rows:
        latency = result["latency_ms"]
        print(f"| {name:<34} | {result['requests']:>8} | {result['errors']:>6} | {result['busy_503']:>5} | "
              f"{latency['p50']:>7.1f} | {latency['p99']:>7.1f} | {latency['max']:>7.1f} | {result['throughput_rps']:>6.1f} |")
    decoder = alone["decoder_ms"]
    print(f"| {'server decoder time, 1 client':<34} | {alone['requests']:>8} | {'':>6} | {'':>5} | {decoder['p50']:>7.1f} | "
          f"{decoder['p99']:>7.1f} | {decoder['max']:>7.1f} | {'':>6} |")
    if reference is not None:
        ref = reference["latency_ms"]
        print(f"| {'official ' + reference['package'] + ' predict()':<34} | {args.requests:>8} | {'':>6} | {'':>5} | "
              f"{ref['p50']:>7.1f} | {ref['p99']:>7.1f} | {ref['max']:>7.1f} | {'':>6} |")
        print(f"ratio HTTP 1-client p50 / official in-process predict p50: {alone['latency_ms']['p50'] / ref['p50']:.2f}")
    else:
        print("official reference not run (needs .venv-bench and shared/reference, and a zoo model name)")
    print(f"exit after SIGTERM with {args.clients} clients and an 'everything' job busy: {exit_s:.2f} s")
    print(f"wrote {output}")
    if loaded["errors"]:
        print("errors:", *loaded["error_samples"], sep="\n  ")


if __name__ == "__main__":
    main()
