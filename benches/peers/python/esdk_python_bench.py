"""esdk_python_bench: throughput of the official Python AWS Encryption SDK
(aws-encryption-sdk) in memory, with a raw AES-256 master key, suite 0x0478
(AES_256_GCM_HKDF_SHA512_COMMIT_KEY) and commitment policy
REQUIRE_ENCRYPT_REQUIRE_DECRYPT, for comparison with `sealpipe bench` and
benches/peers/esdk-rust. No KMS, no network.

    esdk_python_bench.py --size BYTES --count N --threads T [--frame-len BYTES]
                         [--seconds S] [--json]
    esdk_python_bench.py encrypt IN OUT --key raw-aes:NAMESPACE:NAME:PATH [--frame-len BYTES]
    esdk_python_bench.py decrypt IN OUT --key raw-aes:NAMESPACE:NAME:PATH

The JSON has the shape esdk-rust-bench prints. A round is `count` messages per
worker, every worker running at once; a figure is the median round over at least
five timed rounds and `--seconds`, after an untimed warm-up round, for 1 worker and,
when T > 1, for T workers.

Workers are processes, not threads: the SDK's Python code holds the GIL, so threads
of one interpreter would take turns. With T = 1 the single worker runs in this
process. With T > 1 each worker is a forked process with its own client and master
key; the parent starts a round by writing to every worker's pipe and stops the clock
when the last worker has answered.

The key is a RawMasterKey (the 3.x SDK's raw AES key; its wrapped data keys have the
raw AES keyring's layout, so sealpipe and the other ESDKs read them). The keyring
API needs the separate aws-cryptographic-material-providers package, which the pinned
CLI does not allow. Every encrypt call generates and wraps a fresh data key (no
caching materials manager), every decrypt call unwraps one, as in esdk-rust-bench.
The round trip (decrypted == plaintext, suite 0x0478) is checked on the warm-up
round, untimed. Each figure also has the workers' CPU time (user + system, from
time.process_time() in each worker) over its timed rounds divided by their number:
`cpu_sec_per_round`, beside `median_round_sec`.
"""

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time

import aws_encryption_sdk
from aws_encryption_sdk import Algorithm, CommitmentPolicy, EncryptionSDKClient
from aws_encryption_sdk.identifiers import EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKey

SUITE = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
MIN_ROUNDS = 5


class Esdk:
    """One SDK client and its raw AES-256 master key."""

    def __init__(self, namespace, name, key, frame_len):
        self.client = EncryptionSDKClient(
            commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
        )
        self.key = RawMasterKey(
            provider_id=namespace,
            key_id=name.encode(),
            wrapping_key=WrappingKey(
                wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                wrapping_key=key,
                wrapping_key_type=EncryptionKeyType.SYMMETRIC,
            ),
        )
        self.frame_len = frame_len

    def encrypt(self, plaintext):
        ciphertext, _ = self.client.encrypt(
            source=plaintext,
            key_provider=self.key,
            algorithm=SUITE,
            frame_length=self.frame_len,
        )
        return ciphertext

    def decrypt(self, ciphertext):
        plaintext, header = self.client.decrypt(source=ciphertext, key_provider=self.key)
        if header.algorithm != SUITE:
            raise RuntimeError(f"decrypted a message of suite {header.algorithm}")
        return plaintext


class Worker:
    """One worker's client, plaintext and the messages of its last encrypt round."""

    def __init__(self, size, frame_len):
        # A fixed wrapping key: its value does not change the work.
        self.esdk = Esdk("sealpipe-bench", "bench", b"\x42" * 32, frame_len)
        # Never zero bytes, like `sealpipe bench`.
        self.plaintext = b"\x5a" * size
        self.ciphertexts = []

    def round(self, op, count, check):
        """Runs one round; returns the CPU seconds this process spent on it."""
        cpu0 = time.process_time()
        if op == "encrypt":
            self.ciphertexts = [self.esdk.encrypt(self.plaintext) for _ in range(count)]
        else:
            out = [self.esdk.decrypt(c) for c in self.ciphertexts]
            if check and (len(out) != count or any(p != self.plaintext for p in out)):
                raise RuntimeError("round trip failed: decrypted != plaintext")
        return time.process_time() - cpu0


def serve(conn, size, frame_len):
    """A worker process: runs the rounds its pipe asks for, answers with the round's
    CPU seconds, or with an error."""
    try:
        worker = Worker(size, frame_len)
        conn.send("ready")
        while True:
            msg = conn.recv()
            if msg is None:
                return
            conn.send(worker.round(*msg))
    except Exception as e:  # reported to the parent, which fails loudly
        conn.send(f"error: {e!r}")


class Pool:
    """T forked worker processes (T > 1), or one in-process worker (T = 1)."""

    def __init__(self, workers, size, frame_len):
        self.local = Worker(size, frame_len) if workers == 1 else None
        self.procs = []
        if self.local is None:
            ctx = multiprocessing.get_context("fork")
            for _ in range(workers):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=serve, args=(child, size, frame_len), daemon=True)
                p.start()
                self.procs.append((p, parent))
            self._collect()

    def _collect(self):
        """Every worker's answer; returns the sum of their CPU seconds."""
        cpu = 0.0
        for _, conn in self.procs:
            answer = conn.recv()
            if isinstance(answer, float):
                cpu += answer
            elif answer != "ready":
                raise RuntimeError(f"worker failed: {answer}")
        return cpu

    def round(self, op, count, check=False):
        """One round on every worker at once: (wall seconds, CPU seconds)."""
        start = time.perf_counter()
        if self.local is not None:
            cpu = self.local.round(op, count, check)
        else:
            for _, conn in self.procs:
                conn.send((op, count, check))
            cpu = self._collect()
        return time.perf_counter() - start, cpu

    def close(self):
        for p, conn in self.procs:
            conn.send(None)
            p.join()


def measure(pool, op, count, seconds):
    """Median round time of `op` over at least MIN_ROUNDS rounds and `seconds`."""
    start = time.perf_counter()
    times, cpu = [], 0.0
    while len(times) < MIN_ROUNDS or time.perf_counter() - start < seconds:
        wall, round_cpu = pool.round(op, count)
        times.append(wall)
        cpu += round_cpu
    return statistics.median_low(times), len(times), cpu / len(times)


def bench_workers(args, workers):
    pool = Pool(workers, args.size, args.frame_len)
    try:
        # Warm-up rounds, and the untimed round-trip check.
        pool.round("encrypt", args.count)
        pool.round("decrypt", args.count, check=True)
        figure = {"threads": workers}
        for op in ("encrypt", "decrypt"):
            figure[op] = measure(pool, op, args.count, args.seconds)
        return figure
    finally:
        pool.close()


def op_json(args, workers, figure):
    median, rounds, cpu = figure
    messages = workers * args.count / median
    b = messages * args.size
    return {
        "bytes_per_sec": round(b),
        "mb_per_sec": round(b / 1e6, 2),
        "mib_per_sec": round(b / 1048576, 2),
        "messages_per_sec": round(messages, 1),
        "median_round_sec": round(median, 6),
        "rounds": rounds,
        "cpu_sec_per_round": round(cpu, 4),
    }


def report(args, figures):
    if args.json:
        doc = {
            "peer": f"aws-encryption-sdk {aws_encryption_sdk.__version__} (Python)",
            "suite": "0x0478",
            "commitment_policy": "REQUIRE_ENCRYPT_REQUIRE_DECRYPT",
            "keyring": "raw AES-256 (RawMasterKey)",
            "clients": "per-process",
            "python": sys.version.split()[0],
            "message_size": args.size,
            "messages_per_thread_per_round": args.count,
            "frame_length": args.frame_len,
            "results": [
                {
                    "threads": f["threads"],
                    "encrypt": op_json(args, f["threads"], f["encrypt"]),
                    "decrypt": op_json(args, f["threads"], f["decrypt"]),
                }
                for f in figures
            ],
        }
        print(json.dumps(doc, indent=2))
        return
    print(
        f"aws-encryption-sdk {aws_encryption_sdk.__version__} (Python), suite 0x0478, raw AES-256 "
        f"master key, {args.count} x {args.size} bytes per worker per round, frame {args.frame_len}"
    )
    for f in figures:
        for op in ("encrypt", "decrypt"):
            r = op_json(args, f["threads"], f[op])
            print(
                f"  {f['threads']} process(es) {op}: {r['mb_per_sec']:8.1f} MB/s "
                f"{r['messages_per_sec']:10.1f} messages/s ({r['rounds']} rounds)"
            )


def parse_key(reference):
    """`raw-aes:NAMESPACE:NAME:PATH`, as sealpipe spells a raw AES key."""
    parts = reference.split(":", 3)
    if len(parts) != 4 or parts[0] != "raw-aes":
        raise SystemExit(f"not raw-aes:NAMESPACE:NAME:PATH: {reference}")
    with open(parts[3], "rb") as f:
        key = f.read()
    if len(key) != 32:
        raise SystemExit(f"{parts[3]}: {len(key)} bytes, not 32")
    return parts[1], parts[2], key


def file_command(argv):
    p = argparse.ArgumentParser(prog="esdk_python_bench.py encrypt|decrypt")
    p.add_argument("op", choices=("encrypt", "decrypt"))
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--key", required=True)
    p.add_argument("--frame-len", type=int, default=65536)
    a = p.parse_args(argv)
    esdk = Esdk(*parse_key(a.key), a.frame_len)
    with open(a.input, "rb") as f:
        data = f.read()
    out = esdk.encrypt(data) if a.op == "encrypt" else esdk.decrypt(data)
    with open(a.output, "wb") as f:
        f.write(out)


def main(argv):
    if argv and argv[0] in ("encrypt", "decrypt"):
        return file_command(argv)
    p = argparse.ArgumentParser(
        prog="esdk_python_bench.py",
        description="In-memory throughput of the Python ESDK (suite 0x0478, raw AES-256 key). "
        "--threads T > 1 runs T worker processes (the GIL serialises threads).",
    )
    p.add_argument("--size", type=int, default=64 << 20, help="message bytes")
    p.add_argument("--count", type=int, default=1, help="messages per worker per round")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="worker processes")
    p.add_argument("--frame-len", type=int, default=65536)
    p.add_argument("--seconds", type=float, default=2.0, help="minimum time per figure")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.size < 1 or args.count < 1 or args.threads < 1:
        p.error("--size, --count and --threads must be at least 1")
    figures = [bench_workers(args, 1)]
    if args.threads > 1:
        figures.append(bench_workers(args, args.threads))
    report(args, figures)


if __name__ == "__main__":
    main(sys.argv[1:])
