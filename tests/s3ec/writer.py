#!/usr/bin/env python3
"""Writes (and reads back) S3 Encryption Client objects with the official Amazon S3 Encryption
Client for Python (amazon-s3-encryption-client-python 4.0.0, import name `s3_encryption`), against
an S3 + KMS endpoint such as a moto server. Nothing here does any cryptography itself: every
object is encrypted and decrypted by the official client. See tests/s3ec/README.md.

    PY=.venv-test/bin/python
    $PY tests/s3ec/writer.py --endpoint URL --region R --setup --bucket B
        -> {"kms_key_id": "...", "bucket": "B"}   (creates a symmetric KMS key and the bucket)
    $PY tests/s3ec/writer.py --endpoint URL --region R --kms-key-id ID --bucket B --prefix P \
        --out manifest.json [--seed N] [--verify] [--quick] [--derived]
    $PY tests/s3ec/writer.py --endpoint URL --region R --kms-key-id ID --bucket B \
        --decrypt KEY [--context JSON] [--commitment-policy P] [--legacy] \
        [--instruction-suffix S] [--plaintext-out PATH]
        -> {"key": KEY, "size": N, "sha256": "<hex>"}   (exit 1 and {"error": ...} on failure)

Written modes (official_writer true; metadata always in the object's own user metadata: the
official Python client has no way to write an instruction file, nor a legacy "kms" (KmsV1) wrap,
nor a CBC object):
    v3            ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY, REQUIRE_ENCRYPT_REQUIRE_DECRYPT, put_object
    v2            ALG_AES_256_GCM_IV12_TAG16_NO_KDF, FORBID_ENCRYPT_ALLOW_DECRYPT, put_object
    v3-multipart  as v3, via the client's create_multipart_upload / upload_part / complete
    v2-multipart  as v2, likewise
each without and with a caller encryption context (CONTEXT below); put_object sizes
0, 1, 4096, 1 MiB + 7, 20 MiB; multipart size 12 MiB + 5 in 5 MiB parts (3 parts).
--quick drops the 20 MiB objects and makes the multipart ones 10 MiB + 5 (2 parts).

Derived modes (--derived; official_writer false, derived_from = the official object's key), made
from the official v2 / v3 objects of sizes 0, 4096, 1 MiB + 7 by S3 and KMS API calls only (the
ciphertext body is copied server-side with CopyObject, never re-encrypted), then each decrypted
with the official client and checked against the plaintext's sha256:
    v2-instruction  object: no user metadata; KEY.instruction: JSON object of the six V2 keys
                    (string values), its own metadata x-amz-crypto-instr-file: ""   (noctx, ctx)
    v3-instruction  object: x-amz-c, x-amz-d, x-amz-i; KEY.instruction: x-amz-3, x-amz-w, x-amz-t
                    (and x-amz-m if present)                                          (noctx, ctx)
    v2-legacy-kms   the data key of a noctx v2 object recovered with KMS Decrypt (stored matdesc)
                    and re-wrapped with KMS Encrypt, context {"kms_cmk_id": KMS_KEY_ID}; metadata
                    x-amz-wrap-alg "kms", x-amz-matdesc {"kms_cmk_id":"KMS_KEY_ID"}, the new
                    x-amz-key-v2, the rest unchanged (Java v1, authenticated mode); read with
                    --legacy (enable_legacy_wrapping_algorithms)
--derived also runs "probes": variants of the instruction-file JSON shape, each reported as
accepted / rejected by the official reader (manifest "instruction_probes"; the probe objects are
deleted afterwards).

Plaintext: pseudo_random(size, seed) exactly as tests/common/mod.rs `pseudo_random` (xorshift64,
state = seed * 0x9e3779b97f4a7c15 | 1 (mod 2^64), each step x ^= x<<13, x ^= x>>7, x ^= x<<17,
then 8 little-endian bytes of x, the last word cut short). Every object uses the same seed, so
each plaintext is a prefix of the longest one.

Manifest (--out): {"bucket", "prefix", "seed", "kms_key_id", "client", "objects": [{"key",
"mode", "suite", "commitment_policy", "instruction_file", "multipart", "part_size", "context",
"size", "seed", "sha256", "metadata", "official_writer", "derived_from", "instruction_key",
"instruction_body", "instruction_metadata", "legacy"}], "instruction_probes" (with --derived)};
"context" is the caller context ({} when none) to pass on decrypt; "metadata" is head_object's
Metadata (the S3EC wire format: x-amz-meta-* without the prefix); "instruction_body" is the exact
text of the instruction file (null without one); "legacy" true = read with --legacy.
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import time

MIB = 1 << 20
CONTEXT = {"purpose": "sealpipe-interop", "tenant": "t-42"}
PUT_SIZES = [0, 1, 4096, MIB + 7, 20 * MIB]
PUT_SIZES_QUICK = [0, 1, 4096, MIB + 7]
MULTIPART_SIZE = 12 * MIB + 5
MULTIPART_SIZE_QUICK = 10 * MIB + 5
PART_SIZE = 5 * MIB  # S3's minimum for a non-final part
DEFAULT_SEED = 0x53EC
DERIVED_SIZES = [0, 4096, MIB + 7]
INSTRUCTION_SUFFIX = ".instruction"
V2_KEYS = [
    "x-amz-key-v2",
    "x-amz-wrap-alg",
    "x-amz-matdesc",
    "x-amz-iv",
    "x-amz-cek-alg",
    "x-amz-tag-len",
]
V3_OBJECT_KEYS = ["x-amz-c", "x-amz-d", "x-amz-i"]  # stay on the object
V3_INSTRUCTION_KEYS = ["x-amz-3", "x-amz-w", "x-amz-t", "x-amz-m"]  # x-amz-m only if present

SUITES = {
    "v3": ("ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY", "REQUIRE_ENCRYPT_REQUIRE_DECRYPT"),
    "v2": ("ALG_AES_256_GCM_IV12_TAG16_NO_KDF", "FORBID_ENCRYPT_ALLOW_DECRYPT"),
}
POLICIES = {
    "require-encrypt-require-decrypt": "REQUIRE_ENCRYPT_REQUIRE_DECRYPT",
    "require-encrypt-allow-decrypt": "REQUIRE_ENCRYPT_ALLOW_DECRYPT",
    "forbid-encrypt-allow-decrypt": "FORBID_ENCRYPT_ALLOW_DECRYPT",
}

M64 = (1 << 64) - 1


def pseudo_random(size, seed):
    """The bytes of tests/common/mod.rs `pseudo_random(size, seed)`."""
    import array

    x = ((seed * 0x9E3779B97F4A7C15) & M64) | 1
    words = array.array("Q", bytes(8 * ((size + 7) // 8)))
    for i in range(len(words)):
        x ^= (x << 13) & M64
        x ^= x >> 7
        x ^= (x << 17) & M64
        words[i] = x
    if sys.byteorder != "little":
        words.byteswap()
    return words.tobytes()[:size]


def boto_clients(endpoint, region):
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
    )
    s3 = session.client(
        "s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"})
    )
    kms = session.client("kms", endpoint_url=endpoint)
    return s3, kms


def s3ec_client(endpoint, region, kms_key_id, suite=None, policy=None, legacy=False):
    """An official S3EncryptionClient, with a KMS keyring for `kms_key_id`, around a boto3 S3
    client of its own: the S3EncryptionClient registers its encrypt/decrypt handlers on the
    wrapped client's event system, so two of them around one boto3 client would both run on
    every put_object / get_object (a v2 object would be encrypted twice, v3 then v2)."""
    from s3_encryption import S3EncryptionClient, S3EncryptionClientConfig
    from s3_encryption.materials import AlgorithmSuite, CommitmentPolicy, KmsKeyring

    s3, kms = boto_clients(endpoint, region)
    keyring = KmsKeyring(kms, kms_key_id, enable_legacy_wrapping_algorithms=legacy)
    kwargs = {"keyring": keyring, "enable_legacy_unauthenticated_modes": legacy}
    if suite is not None:
        kwargs["encryption_algorithm"] = getattr(AlgorithmSuite, suite)
    if policy is not None:
        kwargs["commitment_policy"] = getattr(CommitmentPolicy, policy)
    return S3EncryptionClient(s3, S3EncryptionClientConfig(**kwargs))


def write_all(args):
    t0 = time.monotonic()
    timings = {}
    s3, _ = boto_clients(args.endpoint, args.region)  # plain client, for head_object
    put_sizes = PUT_SIZES_QUICK if args.quick else PUT_SIZES
    mp_size = MULTIPART_SIZE_QUICK if args.quick else MULTIPART_SIZE
    longest = pseudo_random(max(put_sizes + [mp_size]), args.seed)
    objects = []
    for fmt in ("v3", "v2"):
        suite, policy = SUITES[fmt]
        client = s3ec_client(args.endpoint, args.region, args.kms_key_id, suite, policy)
        for ctx_name, ctx in (("noctx", None), ("ctx", CONTEXT)):
            extra = {} if ctx is None else {"EncryptionContext": dict(ctx)}
            for size in put_sizes:
                key = "%s%s/%s/%d" % (args.prefix, fmt, ctx_name, size)
                body = longest[:size]
                client.put_object(Bucket=args.bucket, Key=key, Body=body, **extra)
                objects.append(entry(key, fmt, suite, policy, ctx, body, args.seed, None))
            key = "%s%s-multipart/%s/%d" % (args.prefix, fmt, ctx_name, mp_size)
            body = longest[:mp_size]
            upload = client.create_multipart_upload(Bucket=args.bucket, Key=key, **extra)
            parts = []
            offsets = list(range(0, mp_size, PART_SIZE))
            for number, start in enumerate(offsets, 1):
                resp = client.upload_part(
                    Bucket=args.bucket,
                    Key=key,
                    UploadId=upload["UploadId"],
                    PartNumber=number,
                    Body=body[start : start + PART_SIZE],
                    IsLastPart=number == len(offsets),
                )
                parts.append({"PartNumber": number, "ETag": resp["ETag"]})
            client.complete_multipart_upload(
                Bucket=args.bucket,
                Key=key,
                UploadId=upload["UploadId"],
                MultipartUpload={"Parts": parts},
            )
            objects.append(
                entry(key, fmt + "-multipart", suite, policy, ctx, body, args.seed, PART_SIZE)
            )
    for obj in objects:
        obj["metadata"] = s3.head_object(Bucket=args.bucket, Key=obj["key"])["Metadata"]
    timings["write"] = time.monotonic() - t0
    if args.verify:
        t = time.monotonic()
        # Read everything back with the official client (ALLOW_DECRYPT reads v2 and v3).
        reader = s3ec_client(
            args.endpoint, args.region, args.kms_key_id, policy="REQUIRE_ENCRYPT_ALLOW_DECRYPT"
        )
        for obj in objects:
            got = decrypt(reader, args.bucket, obj["key"], obj["context"] or None)
            if got["sha256"] != obj["sha256"] or got["size"] != obj["size"]:
                raise SystemExit("verify failed for %s: %r" % (obj["key"], got))
        timings["verify"] = time.monotonic() - t
    probes = None
    derived = []
    if args.derived:
        t = time.monotonic()
        derived = make_derived(args, objects)  # validated with the official reader inside
        timings["derived"] = time.monotonic() - t
        t = time.monotonic()
        probes = probe_instruction_shapes(args, objects)
        timings["probes"] = time.monotonic() - t
    official = len(objects)
    objects = objects + derived
    manifest = {
        "bucket": args.bucket,
        "prefix": args.prefix,
        "seed": args.seed,
        "kms_key_id": args.kms_key_id,
        "client": "amazon-s3-encryption-client-python 4.0.0",
        "objects": objects,
    }
    if probes is not None:
        manifest["instruction_probes"] = probes
    with open(args.out + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(args.out + ".tmp", args.out)
    timings["total"] = time.monotonic() - t0
    summary = {
        "ok": True,
        "objects": len(objects),
        "official": official,
        "derived": len(derived),
        "verified": bool(args.verify),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    if probes is not None:
        summary["probes"] = {p["name"]: p["result"] for p in probes}
    print(json.dumps(summary))


def entry(key, mode, suite, policy, ctx, body, seed, part_size):
    return {
        "key": key,
        "mode": mode,
        "suite": suite,
        "commitment_policy": policy,
        "instruction_file": False,
        "multipart": part_size is not None,
        "part_size": part_size,
        "context": dict(ctx or {}),
        "size": len(body),
        "seed": seed,
        "sha256": hashlib.sha256(body).hexdigest(),
        "official_writer": True,
        "derived_from": None,
        "instruction_key": None,
        "instruction_body": None,
        "instruction_metadata": None,
        "legacy": False,
    }


# ---------------------------------------------------------------------------------------------
# Derived fixtures (--derived): instruction files and the legacy "kms" wrap, which the official
# Python client reads but cannot write. Made from official objects with plain S3 / KMS calls; the
# ciphertext body is copied server-side, never decrypted or re-encrypted here. Each one is then
# decrypted with the official client and its sha256 compared with the original's.


def copy_body(s3, bucket, src, dst, metadata):
    """CopyObject src -> dst with the user metadata replaced by `metadata` (the body and its
    Content-Type kept); checks the copy's ETag (moto: MD5 of the body) equals the source's."""
    head = s3.head_object(Bucket=bucket, Key=src)
    s3.copy_object(
        Bucket=bucket,
        Key=dst,
        CopySource={"Bucket": bucket, "Key": src},
        MetadataDirective="REPLACE",
        Metadata=metadata,
        ContentType=head.get("ContentType", "binary/octet-stream"),
    )
    new = s3.head_object(Bucket=bucket, Key=dst)
    if new["ETag"] != head["ETag"] or new["ContentLength"] != head["ContentLength"]:
        raise SystemExit("copy of %s to %s changed the body" % (src, dst))
    if new["Metadata"] != metadata:
        raise SystemExit("copy of %s to %s: metadata %r" % (src, dst, new["Metadata"]))
    return new["Metadata"]


def put_instruction(s3, bucket, key, fields):
    """KEY.instruction: the JSON object `fields` (string values, compact, key order as given),
    with its own user metadata x-amz-crypto-instr-file: "" (as the Java client writes it)."""
    body = json.dumps(fields, separators=(",", ":"))
    ikey = key + INSTRUCTION_SUFFIX
    s3.put_object(
        Bucket=bucket,
        Key=ikey,
        Body=body.encode(),
        ContentType="application/json",
        Metadata={"x-amz-crypto-instr-file": ""},
    )
    meta = s3.head_object(Bucket=bucket, Key=ikey)["Metadata"]
    return ikey, body, meta


def derived_entry(src, key, mode, metadata, context=None, instruction=None, legacy=False):
    e = dict(src)
    e.update(
        key=key,
        mode=mode,
        instruction_file=instruction is not None,
        metadata=metadata,
        official_writer=False,
        derived_from=src["key"],
        legacy=legacy,
    )
    if context is not None:
        e["context"] = dict(context)
    if instruction is not None:
        e["instruction_key"], e["instruction_body"], e["instruction_metadata"] = instruction
    return e


def make_derived(args, objects):
    s3, kms = boto_clients(args.endpoint, args.region)
    by_key = {o["key"]: o for o in objects}
    out = []
    for ctx_name in ("noctx", "ctx"):
        for size in DERIVED_SIZES:
            # v2-instruction: the body with no user metadata, all six V2 keys in the file.
            src = by_key["%sv2/%s/%d" % (args.prefix, ctx_name, size)]
            key = "%sv2-instruction/%s/%d" % (args.prefix, ctx_name, size)
            meta = copy_body(s3, args.bucket, src["key"], key, {})
            fields = {k: src["metadata"][k] for k in V2_KEYS}
            instr = put_instruction(s3, args.bucket, key, fields)
            out.append(derived_entry(src, key, "v2-instruction", meta, instruction=instr))
            # v3-instruction: x-amz-c/d/i stay on the object, the EDK part goes to the file.
            src = by_key["%sv3/%s/%d" % (args.prefix, ctx_name, size)]
            key = "%sv3-instruction/%s/%d" % (args.prefix, ctx_name, size)
            meta = copy_body(
                s3, args.bucket, src["key"], key, {k: src["metadata"][k] for k in V3_OBJECT_KEYS}
            )
            fields = {k: src["metadata"][k] for k in V3_INSTRUCTION_KEYS if k in src["metadata"]}
            instr = put_instruction(s3, args.bucket, key, fields)
            out.append(derived_entry(src, key, "v3-instruction", meta, instruction=instr))
    for size in DERIVED_SIZES:
        # v2-legacy-kms: re-wrap the data key of a noctx v2 object as KmsV1 (wrap alg "kms").
        src = by_key["%sv2/noctx/%d" % (args.prefix, size)]
        key = "%sv2-legacy-kms/noctx/%d" % (args.prefix, size)
        m = src["metadata"]
        data_key = kms.decrypt(
            KeyId=args.kms_key_id,
            CiphertextBlob=base64.b64decode(m["x-amz-key-v2"]),
            EncryptionContext=json.loads(m["x-amz-matdesc"]),
        )["Plaintext"]
        if len(data_key) != 32:
            raise SystemExit("data key of %s is %d bytes" % (src["key"], len(data_key)))
        matdesc = {"kms_cmk_id": args.kms_key_id}
        blob = kms.encrypt(KeyId=args.kms_key_id, Plaintext=data_key, EncryptionContext=matdesc)[
            "CiphertextBlob"
        ]
        del data_key
        new_meta = {
            "x-amz-key-v2": base64.b64encode(blob).decode(),
            "x-amz-wrap-alg": "kms",
            "x-amz-matdesc": json.dumps(matdesc, separators=(",", ":")),
            "x-amz-iv": m["x-amz-iv"],
            "x-amz-cek-alg": m["x-amz-cek-alg"],
            "x-amz-tag-len": m["x-amz-tag-len"],
        }
        meta = copy_body(s3, args.bucket, src["key"], key, new_meta)
        out.append(derived_entry(src, key, "v2-legacy-kms", meta, context={}, legacy=True))
    validate_derived(args, out)
    return out


def validate_derived(args, derived):
    """Decrypt every derived object with the official client (the --decrypt path) and compare
    size and sha256 with the original plaintext's; the legacy ones must also be refused by a
    reader without the legacy option."""
    reader = s3ec_client(
        args.endpoint, args.region, args.kms_key_id, policy="REQUIRE_ENCRYPT_ALLOW_DECRYPT"
    )
    legacy_reader = s3ec_client(
        args.endpoint,
        args.region,
        args.kms_key_id,
        policy="REQUIRE_ENCRYPT_ALLOW_DECRYPT",
        legacy=True,
    )
    for obj in derived:
        client = legacy_reader if obj["legacy"] else reader
        got = decrypt(client, args.bucket, obj["key"], obj["context"] or None)
        if got["sha256"] != obj["sha256"] or got["size"] != obj["size"]:
            raise SystemExit("derived %s does not decrypt to its source: %r" % (obj["key"], got))
        if obj["legacy"]:
            try:
                decrypt(reader, args.bucket, obj["key"], None)
            except Exception as e:
                if "Enable legacy wrapping algorithms" not in str(e):
                    raise
            else:
                raise SystemExit("%s decrypted without the legacy option" % obj["key"])


def probe_instruction_shapes(args, objects):
    """Which instruction-file JSON shapes the official reader accepts: each variant is written
    under {prefix}probe/..., decrypted with the official client (sha256 checked when accepted)
    and deleted. Returns [{"name", "result": "accepted" | "rejected", "error"}]."""
    s3, _ = boto_clients(args.endpoint, args.region)
    reader = s3ec_client(
        args.endpoint, args.region, args.kms_key_id, policy="REQUIRE_ENCRYPT_ALLOW_DECRYPT"
    )
    by_key = {o["key"]: o for o in objects}
    v2 = by_key["%sv2/noctx/4096" % args.prefix]
    v3 = by_key["%sv3/noctx/4096" % args.prefix]
    v2f = {k: v2["metadata"][k] for k in V2_KEYS}
    v3f = {k: v3["metadata"][k] for k in V3_INSTRUCTION_KEYS if k in v3["metadata"]}
    v3o = {k: v3["metadata"][k] for k in V3_OBJECT_KEYS}
    marker = {"x-amz-crypto-instr-file": ""}
    raw = lambda d, **kw: json.dumps(d, **kw).encode()  # noqa: E731
    compact = {"separators": (",", ":")}
    no_tag_len = {k: v for k, v in v2f.items() if k != "x-amz-tag-len"}
    nested_matdesc = dict(v2f, **{"x-amz-matdesc": json.loads(v2f["x-amz-matdesc"])})
    nested_t = dict(v3f, **{"x-amz-t": json.loads(v3f["x-amz-t"])})
    v3o_no_i = {k: v3o[k] for k in ("x-amz-c", "x-amz-d")}
    tag_len_num = {"x-amz-tag-len": 128}
    variants = [
        # (name, source, object metadata, instruction body, instruction metadata)
        ("v2 compact, string values (the fixture shape)", v2, {}, raw(v2f, **compact), marker),
        ("v2 pretty-printed", v2, {}, raw(v2f, indent=2), marker),
        ("v2 without x-amz-crypto-instr-file on the instruction file", v2, {}, raw(v2f), {}),
        ("v2 x-amz-crypto-instr-file inside the JSON", v2, {}, raw(dict(v2f, **marker)), {}),
        ("v2 x-amz-matdesc as a nested JSON object", v2, {}, raw(nested_matdesc), marker),
        ("v2 x-amz-tag-len as a JSON number", v2, {}, raw(dict(v2f, **tag_len_num)), marker),
        ("v2 without x-amz-tag-len", v2, {}, raw(no_tag_len), marker),
        ("v2 extra non-S3EC key in the JSON", v2, {}, raw(dict(v2f, note="x")), marker),
        ("v2 object keeps x-amz-iv", v2, {"x-amz-iv": v2f["x-amz-iv"]}, raw(v2f), marker),
        ("v2 object has non-S3EC metadata only", v2, {"note": "x"}, raw(v2f), marker),
        ("v2 JSON array body", v2, {}, raw([v2f]), marker),
        ("v3 compact, string values (the fixture shape)", v3, v3o, raw(v3f, **compact), marker),
        ("v3 x-amz-t as a nested JSON object", v3, v3o, raw(nested_t), marker),
        ("v3 instruction file also holds x-amz-c/d/i", v3, v3o, raw(dict(v3f, **v3o)), marker),
        ("v3 object without x-amz-i (EDK in the file)", v3, v3o_no_i, raw(v3f), marker),
    ]
    results = []
    for n, (name, src, ometa, ibody, imeta) in enumerate(variants):
        key = "%sprobe/%d" % (args.prefix, n)
        copy_body(s3, args.bucket, src["key"], key, ometa)
        ikey = key + INSTRUCTION_SUFFIX
        s3.put_object(Bucket=args.bucket, Key=ikey, Body=ibody, Metadata=imeta)
        try:
            got = decrypt(reader, args.bucket, key, None)
            if got["sha256"] != src["sha256"]:
                raise SystemExit("probe %r decrypted to the wrong plaintext" % name)
            results.append({"name": name, "result": "accepted", "error": None})
        except SystemExit:
            raise
        except Exception as e:
            results.append(
                {"name": name, "result": "rejected", "error": "%s: %s" % (type(e).__name__, e)}
            )
        finally:
            s3.delete_object(Bucket=args.bucket, Key=key)
            s3.delete_object(Bucket=args.bucket, Key=key + INSTRUCTION_SUFFIX)
    return results


def decrypt(client, bucket, key, context, suffix=None, out=None):
    kwargs = {"Bucket": bucket, "Key": key}
    if context is not None:
        kwargs["EncryptionContext"] = context
    if suffix is not None:
        kwargs["InstructionFileSuffix"] = suffix
    body = client.get_object(**kwargs)["Body"]
    digest = hashlib.sha256()
    size = 0
    sink = open(out, "wb") if out else None
    try:
        while True:
            chunk = body.read(MIB)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            if sink:
                sink.write(chunk)
    finally:
        if sink:
            sink.close()
    return {"key": key, "size": size, "sha256": digest.hexdigest()}


def decrypt_one(args):
    client = s3ec_client(
        args.endpoint,
        args.region,
        args.kms_key_id,
        policy=POLICIES[args.commitment_policy],
        legacy=args.legacy,
    )
    context = None
    if args.context is not None:
        context = json.loads(args.context)
        if not isinstance(context, dict):
            raise SystemExit("--context must be a JSON object")
    try:
        result = decrypt(
            client, args.bucket, args.decrypt, context, args.instruction_suffix, args.plaintext_out
        )
    except Exception as e:  # the official client's error, reported as data
        print(json.dumps({"key": args.decrypt, "error": "%s: %s" % (type(e).__name__, e)}))
        return 1
    print(json.dumps(result))
    return 0


def setup(args):
    s3, kms = boto_clients(args.endpoint, args.region)
    key_id = kms.create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")[
        "KeyMetadata"
    ]["KeyId"]
    conf = {}
    if args.region != "us-east-1":
        conf["CreateBucketConfiguration"] = {"LocationConstraint": args.region}
    s3.create_bucket(Bucket=args.bucket, **conf)
    print(json.dumps({"kms_key_id": key_id, "bucket": args.bucket}))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True, help="S3 and KMS endpoint, e.g. http://127.0.0.1:5123")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--bucket", required=True)
    p.add_argument("--kms-key-id", help="KMS key id or ARN (not needed with --setup)")
    p.add_argument("--prefix", default="s3ec/")
    p.add_argument("--out", help="manifest path (write mode)")
    p.add_argument("--seed", type=lambda s: int(s, 0), default=DEFAULT_SEED)
    p.add_argument("--verify", action="store_true", help="decrypt every object back and compare")
    p.add_argument("--quick", action="store_true", help="no 20 MiB objects, smaller multipart")
    p.add_argument(
        "--derived",
        action="store_true",
        help="write mode: also derive instruction-file and legacy-kms fixtures from the official"
        " objects (S3/KMS calls only) and check them with the official reader",
    )
    p.add_argument("--setup", action="store_true", help="create a KMS key and the bucket")
    p.add_argument("--decrypt", metavar="KEY", help="decrypt one object, print its sha256")
    p.add_argument("--context", metavar="JSON", help="caller encryption context for --decrypt")
    p.add_argument(
        "--commitment-policy",
        choices=sorted(POLICIES),
        default="require-encrypt-allow-decrypt",
        help="for --decrypt (default reads v2 and v3)",
    )
    p.add_argument(
        "--legacy",
        action="store_true",
        help="--decrypt: enable legacy wrapping (kms) and unauthenticated (CBC) modes",
    )
    p.add_argument("--instruction-suffix", help="--decrypt: instruction file suffix (default .instruction)")
    p.add_argument("--plaintext-out", metavar="PATH", help="--decrypt: also write the plaintext here")
    args = p.parse_args(argv)
    if args.setup:
        setup(args)
        return 0
    if not args.kms_key_id:
        p.error("--kms-key-id is required")
    if args.decrypt is not None:
        return decrypt_one(args)
    if not args.out:
        p.error("--out is required to write objects")
    write_all(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
