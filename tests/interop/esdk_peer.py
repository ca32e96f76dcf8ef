#!/usr/bin/env python3
"""Interop peer for sealpipe's tests, built on the official AWS Encryption SDK for Python.

Run it with the project's test venv (scripts/setup-venv.sh prints its python):

    .venv-test/bin/python tests/interop/esdk_peer.py [--commitment-policy P] batch JOBS.json
    .venv-test/bin/python tests/interop/esdk_peer.py encrypt --key-file K --namespace NS --name N \
        --suite 0478 --frame-len 4096 --context '{"a":"b"}' --input IN --output OUT
    .venv-test/bin/python tests/interop/esdk_peer.py decrypt --key-file K --namespace NS --name N \
        --input IN --output OUT

Keys are Raw AES master keys (RawMasterKey + WrappingKey, AES_{128,192,256}_GCM_IV12_TAG16_NO_PADDING
chosen by the key length, EncryptionKeyType.SYMMETRIC); provider_id = namespace, key_id = name.

`batch` reads a JSON list of jobs (from a file, or stdin with "-"):
    {"op":"encrypt","key_file":P,"namespace":NS,"name":N,"suite":"0478"|"0578","frame_len":N,
     "context":{k:v},"input":P,"output":P}
    {"op":"decrypt","key_file":P,"namespace":NS,"name":N,"input":P,"output":P}
Optional per job: "commitment_policy" (overrides the command-line policy).
It writes one JSON list of results to stdout, in job order, and nothing else:
    {"ok":true, "suite":"0478", "frame_length":4096, "context":{...}, "message_id":"<hex>", ...}
    {"ok":false, "error":"<exception type>: <message>"}
Exit code: 0 when the batch ran (even if jobs failed), 2 on bad arguments / unreadable job file.
The single-op subcommands print one result object and exit 0 (ok) or 1 (failed).

An output file is written only on success: to OUTPUT.tmp, then os.replace()d onto OUTPUT.
"""

import argparse
import binascii
import json
import os
import sys

# Python SDK constraint (aws_encryption_sdk.internal.utils.validate_frame_length): on ENCRYPT the
# frame length must be 0 (non-framed) or a multiple of 128 (it compares with the AES block size,
# which `cryptography` gives in bits) and at most 2**31 - 1, i.e. at most 2147483520.
# Decrypt does not check this: it accepts any frame length in a message header up to 2**31 - 1.
FRAME_LENGTH_MULTIPLE = 128
MAX_FRAME_LENGTH = 2**31 - 1

POLICIES = {
    "require-encrypt-require-decrypt": "REQUIRE_ENCRYPT_REQUIRE_DECRYPT",
    "require-encrypt-allow-decrypt": "REQUIRE_ENCRYPT_ALLOW_DECRYPT",
    "forbid-encrypt-allow-decrypt": "FORBID_ENCRYPT_ALLOW_DECRYPT",
}
DEFAULT_POLICY = "require-encrypt-require-decrypt"
CHUNK = 1 << 20


class JobError(Exception):
    """A job description is invalid (missing or ill-typed field)."""


class Peer(object):
    """Holds the SDK clients and master keys, so a batch reuses them."""

    def __init__(self, default_policy):
        # Imported here so that `--help` and argument errors do not pay the SDK's import time.
        import aws_encryption_sdk
        from aws_encryption_sdk.identifiers import (
            Algorithm,
            CommitmentPolicy,
            EncryptionKeyType,
            WrappingAlgorithm,
        )
        from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
        from aws_encryption_sdk.key_providers.raw import RawMasterKey

        self.sdk = aws_encryption_sdk
        self.Algorithm = Algorithm
        self.CommitmentPolicy = CommitmentPolicy
        self.EncryptionKeyType = EncryptionKeyType
        self.WrappingAlgorithm = WrappingAlgorithm
        self.WrappingKey = WrappingKey
        self.RawMasterKey = RawMasterKey
        self.default_policy = default_policy
        self._clients = {}
        self._keys = {}

    def client(self, policy_name):
        if policy_name not in POLICIES:
            raise JobError(
                "unknown commitment_policy %r (expected one of %s)" % (policy_name, ", ".join(sorted(POLICIES)))
            )
        if policy_name not in self._clients:
            policy = getattr(self.CommitmentPolicy, POLICIES[policy_name])
            self._clients[policy_name] = self.sdk.EncryptionSDKClient(commitment_policy=policy)
        return self._clients[policy_name]

    def master_key(self, key_file, namespace, name):
        cache_key = (os.path.abspath(key_file), namespace, name)
        if cache_key not in self._keys:
            with open(key_file, "rb") as f:
                key = f.read()
            algorithms = {
                16: self.WrappingAlgorithm.AES_128_GCM_IV12_TAG16_NO_PADDING,
                24: self.WrappingAlgorithm.AES_192_GCM_IV12_TAG16_NO_PADDING,
                32: self.WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            }
            if len(key) not in algorithms:
                raise ValueError("key file %s holds %d bytes; a raw AES key is 16, 24 or 32 bytes" % (key_file, len(key)))
            wrapping_key = self.WrappingKey(
                wrapping_algorithm=algorithms[len(key)],
                wrapping_key=key,
                wrapping_key_type=self.EncryptionKeyType.SYMMETRIC,
            )
            self._keys[cache_key] = self.RawMasterKey(
                provider_id=namespace, key_id=name.encode("utf-8"), wrapping_key=wrapping_key
            )
        return self._keys[cache_key]

    def algorithm(self, suite):
        if isinstance(suite, int):
            suite_id = suite
        else:
            text = str(suite).lower()
            if text.startswith("0x"):
                text = text[2:]
            try:
                suite_id = int(text, 16)
            except ValueError:
                raise JobError("suite must be 4 hex digits such as \"0478\", not %r" % (suite,))
        try:
            return self.Algorithm.get_by_id(suite_id)
        except KeyError:
            raise JobError("unknown algorithm suite %04x" % suite_id)

    def header_facts(self, header):
        edks = sorted(
            (
                {
                    "provider_id": _to_text(edk.key_provider.provider_id),
                    "key_info": binascii.hexlify(edk.key_provider.key_info).decode("ascii"),
                    "encrypted_data_key_length": len(edk.encrypted_data_key),
                }
                for edk in header.encrypted_data_keys
            ),
            key=lambda e: (e["provider_id"], e["key_info"]),
        )
        return {
            "suite": "%04x" % header.algorithm.algorithm_id,
            "frame_length": header.frame_length,
            "context": dict(header.encryption_context),
            "message_id": binascii.hexlify(header.message_id).decode("ascii"),
            "message_version": int(getattr(header.version, "value", header.version)),
            "content_type": "framed" if header.content_type.value == 2 else "non-framed",
            "edks": edks,
        }

    def run(self, job):
        if not isinstance(job, dict):
            raise JobError("a job must be a JSON object, not %s" % type(job).__name__)
        op = job.get("op")
        if op not in ("encrypt", "decrypt"):
            raise JobError("job field \"op\" must be \"encrypt\" or \"decrypt\", not %r" % (op,))
        policy = job.get("commitment_policy", self.default_policy)
        client = self.client(policy)
        key = self.master_key(_field(job, "key_file"), _field(job, "namespace"), _field(job, "name"))
        input_path = _field(job, "input")
        output_path = _field(job, "output")

        if op == "encrypt":
            namespace = job["namespace"]
            if len(namespace.encode("utf-8")) != len(namespace):
                # aws-encryption-sdk 3.x writes the provider ID length in characters, not bytes,
                # so a non-ASCII provider ID is truncated and the message cannot be decrypted
                # (not even by the SDK itself). Refuse instead of writing a corrupt message.
                raise JobError(
                    "namespace %r is not ASCII: the Python SDK cannot encrypt with a non-ASCII "
                    "provider ID (it would write a truncated one)" % namespace
                )
            kwargs = {"mode": "e", "key_provider": key}
            frame_len = job.get("frame_len", job.get("frame_length", 4096))
            if isinstance(frame_len, bool) or not isinstance(frame_len, int):
                raise JobError("frame_len must be an integer, not %r" % (frame_len,))
            kwargs["frame_length"] = frame_len
            if job.get("suite") is not None:
                kwargs["algorithm"] = self.algorithm(job["suite"])
            context = job.get("context") or {}
            if not isinstance(context, dict):
                raise JobError("context must be a JSON object of strings")
            kwargs["encryption_context"] = dict(context)
        else:
            kwargs = {"mode": "d", "key_provider": key}

        tmp_path = output_path + ".tmp"
        try:
            with open(input_path, "rb") as src, open(tmp_path, "wb") as dst:
                kwargs["source"] = src
                # Not `with stream:` -- its __exit__ logs and swallows SDK errors from close().
                stream = client.stream(**kwargs)
                try:
                    while True:
                        chunk = stream.read(CHUNK)
                        if not chunk:
                            break
                        dst.write(chunk)
                    header = stream.header
                except BaseException:
                    try:
                        stream.close()
                    except Exception:
                        pass  # keep the first error
                    raise
                # For decrypt, close() raises unless the whole message incl. footer was read.
                stream.close()
                input_length = src.tell()
                trailing = os.fstat(src.fileno()).st_size - input_length
                output_length = dst.tell()
            os.replace(tmp_path, output_path)
        except BaseException:
            try:
                os.unlink(tmp_path)
            except OSError:
                pass
            raise

        result = {"ok": True, "op": op}
        result.update(self.header_facts(header))
        result["input_length"] = input_length
        result["output_length"] = output_length
        if op == "decrypt":
            # The Python SDK ignores bytes after the end of the message; report them.
            result["trailing_bytes"] = trailing
        return result


def _to_text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _field(job, name):
    if name not in job:
        raise JobError("job is missing field \"%s\"" % name)
    value = job[name]
    if not isinstance(value, str):
        raise JobError("job field \"%s\" must be a string" % name)
    return value


def _error(exc):
    return {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}


def run_job(peer, job):
    try:
        return peer.run(job)
    except Exception as exc:  # every failure becomes a result; the batch goes on
        return _error(exc)


def _write_json(obj, stream):
    stream.write(json.dumps(obj))
    stream.write("\n")
    stream.flush()


def cmd_batch(args, parser, out):
    try:
        if args.jobs == "-":
            jobs = json.load(sys.stdin)
        else:
            with open(args.jobs, "rb") as f:
                jobs = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        parser.error("cannot read job file %s: %s" % (args.jobs, exc))
    if not isinstance(jobs, list):
        parser.error("job file %s must hold a JSON list of jobs" % args.jobs)
    peer = Peer(args.commitment_policy)
    results = [run_job(peer, job) for job in jobs]
    _write_json(results, out)
    return 0


def _parse_context(args, parser):
    context = {}
    if args.context is not None:
        try:
            context = json.loads(args.context)
        except ValueError as exc:
            parser.error("--context is not valid JSON: %s" % exc)
        if not isinstance(context, dict):
            parser.error("--context must be a JSON object")
    for item in args.ec or []:
        if "=" not in item:
            parser.error("--ec expects KEY=VALUE, got %r" % item)
        k, v = item.split("=", 1)
        context[k] = v
    return context


def cmd_single(args, parser, out):
    job = {
        "op": args.command,
        "namespace": args.namespace,
        "name": args.name,
        "input": args.input,
        "output": args.output,
    }
    job["key_file"] = args.key_file
    if args.command == "encrypt":
        job["frame_len"] = args.frame_len
        if args.suite is not None:
            job["suite"] = args.suite
        job["context"] = _parse_context(args, parser)
    peer = Peer(args.commitment_policy)
    result = run_job(peer, job)
    _write_json(result, out)
    return 0 if result["ok"] else 1


def build_parser():
    parser = argparse.ArgumentParser(
        description="AWS Encryption SDK (Python) interop peer for sealpipe tests (Raw AES master keys)."
    )
    policy_help = "commitment policy (default: %s)" % DEFAULT_POLICY
    parser.add_argument("--commitment-policy", choices=sorted(POLICIES), default=DEFAULT_POLICY, help=policy_help)

    # Also accepted after the subcommand; SUPPRESS keeps the top-level value when absent.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--commitment-policy", choices=sorted(POLICIES), default=argparse.SUPPRESS, help=policy_help)

    sub = parser.add_subparsers(dest="command", metavar="{batch,encrypt,decrypt}")
    sub.required = True

    p = sub.add_parser("batch", parents=[common], help="run a JSON list of jobs; print a JSON list of results")
    p.add_argument("jobs", metavar="JOBS.json", help="job file, or - for stdin")

    for op in ("encrypt", "decrypt"):
        p = sub.add_parser(op, parents=[common], help="%s one file" % op)
        p.add_argument("--key-file", required=True, help="file holding the raw AES key (16, 24 or 32 bytes)")
        p.add_argument("--namespace", required=True, help="key namespace (provider ID)")
        p.add_argument("--name", required=True, help="key name (key ID)")
        p.add_argument("--input", required=True)
        p.add_argument("--output", required=True)
        if op == "encrypt":
            p.add_argument("--suite", help="algorithm suite, 4 hex digits: 0478 or 0578 (default: SDK default, 0578)")
            p.add_argument(
                "--frame-len",
                type=int,
                default=4096,
                help="frame length in bytes: 0 (non-framed) or a multiple of 128 up to 2147483520 (default 4096)",
            )
            p.add_argument("--context", help="encryption context as a JSON object")
            p.add_argument("--ec", action="append", metavar="KEY=VALUE", help="encryption context pair (repeatable)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    # Keep stdout for the JSON result only: anything else the SDK or a dependency prints goes to stderr.
    out = sys.stdout
    sys.stdout = sys.stderr
    try:
        if args.command == "batch":
            return cmd_batch(args, parser, out)
        return cmd_single(args, parser, out)
    finally:
        sys.stdout = out


if __name__ == "__main__":
    sys.exit(main())
