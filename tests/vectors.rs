//! The official ESDK decrypt vectors: 132 Raw AES messages over all eleven suites, and
//! the 46 key-commitment cases (five must fail). Both AEAD backends run every vector.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use sealpipe::crypto::{AeadBackend, DataKey};
use sealpipe::format::{EncryptionContext, MessageVersion};
use sealpipe::keys::{DecryptionMaterials, KeepPolicy, Keyring, MultiKeyring, Rewrapper};
use sealpipe::stream::HeaderNonce::{AllowReuse, Fresh};
use sealpipe::stream::{self, DecryptOptions};
use sealpipe::{CommitmentPolicy, Error};

fn legacy_options(aead: AeadBackend) -> DecryptOptions {
    DecryptOptions {
        commitment_policy: CommitmentPolicy::RequireEncryptAllowDecrypt,
        aead,
        ..Default::default()
    }
}

fn keyring_for(desc: &Value, keys: &Value) -> Arc<dyn Keyring> {
    match desc["type"].as_str().unwrap() {
        "raw" => {
            assert_eq!(desc["encryption-algorithm"], "aes");
            let key = &keys[desc["key"].as_str().unwrap()];
            let material = B64.decode(key["material"].as_str().unwrap()).unwrap();
            common::raw_keyring(
                desc["provider-id"].as_str().unwrap(),
                key["key-id"].as_str().unwrap(),
                &material,
            )
        }
        "multi-keyring" => {
            let children = desc["childKeyrings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| keyring_for(c, keys))
                .collect();
            Arc::new(MultiKeyring::new(
                keyring_for(&desc["generator"], keys),
                children,
            ))
        }
        "required-encryption-context-cmm" => keyring_for(&desc["underlying"], keys),
        other => panic!("unexpected key description type {other}"),
    }
}

fn context_from(v: &Value) -> EncryptionContext {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// One raw AES decrypt vector: its message, the keyring that opens it, the context to
/// reproduce.
struct RawAesVector {
    id: String,
    message: Vec<u8>,
    keyring: Arc<dyn Keyring>,
    reproduced: EncryptionContext,
}

/// The 132 raw AES vectors, and the plaintext each one holds.
fn raw_aes_vectors() -> (Vec<RawAesVector>, Vec<u8>) {
    let dir = common::vectors_dir().join("raw-aes");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("decrypt-manifest.json")).unwrap()).unwrap();
    let keys: Value =
        serde_json::from_slice(&std::fs::read(dir.join("keys.json")).unwrap()).unwrap();
    let keys = &keys["keys"];
    let plaintext = std::fs::read(dir.join("plaintexts/small")).unwrap();
    let vectors = manifest["tests"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, test)| {
            let scenario = &test["decryption-scenario"];
            let path = scenario["ciphertext"]
                .as_str()
                .unwrap()
                .trim_start_matches("file://");
            RawAesVector {
                id: id.clone(),
                message: std::fs::read(dir.join(path)).unwrap(),
                keyring: keyring_for(&scenario["decryptKeyDescription"], keys),
                reproduced: context_from(&scenario["reproduced-encryption-context"]),
            }
        })
        .collect();
    (vectors, plaintext)
}

#[test]
fn every_raw_aes_vector_decrypts_to_its_plaintext_on_both_backends() {
    let (vectors, plaintext) = raw_aes_vectors();
    assert_eq!(vectors.len(), 132);
    let mut suites = BTreeSet::new();
    let mut failures = Vec::new();
    for RawAesVector {
        id,
        message,
        keyring,
        reproduced,
    } in &vectors
    {
        for aead in [AeadBackend::Ring, AeadBackend::RustCrypto] {
            match common::decrypt(keyring.as_ref(), reproduced, &legacy_options(aead), message) {
                Ok((header, out)) if out == plaintext => {
                    suites.insert(header.body.suite.id);
                }
                Ok(_) => failures.push(format!("{id} ({aead}): wrong plaintext")),
                Err(e) => failures.push(format!("{id} ({aead}): {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(suites.len(), 11, "suites covered: {suites:x?}");
}

#[test]
fn legacy_vectors_are_refused_under_the_default_policy() {
    let dir = common::vectors_dir().join("raw-aes");
    // 0x0178, raw aes-256: a v1 message.
    let message =
        std::fs::read(dir.join("ciphertexts/89fcac4e-189f-489c-b214-88a9cffd9c0e")).unwrap();
    let keyring = common::raw_keyring(
        "aws-raw-vectors-persistent-aes-256",
        "aes-256",
        &B64.decode("AAECAwQFBgcICRAREhMUFRYXGBkgISIjJCUmJygpMDE=")
            .unwrap(),
    );
    let err = common::decrypt(
        keyring.as_ref(),
        &Default::default(),
        &Default::default(),
        &message,
    )
    .unwrap_err();
    assert!(matches!(err, Error::CommitmentPolicy { .. }), "{err}");
    assert!(
        err.to_string().contains("require-encrypt-allow-decrypt"),
        "{err}"
    );
}

#[test]
fn commitment_vectors_give_the_expected_outcome() {
    let path = common::vectors_dir().join("commitment/commitment-test-vectors.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let cases = doc["tests"].as_array().unwrap();
    assert_eq!(cases.len(), 46);
    let mut rejected = Vec::new();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let n = i + 1;
        let message = B64.decode(case["ciphertext"].as_str().unwrap()).unwrap();
        let dek = B64.decode(case["decrypted-dek"].as_str().unwrap()).unwrap();
        let should_pass = case["status"] == Value::Bool(true) || case["status"] == "True";
        for aead in [AeadBackend::Ring, AeadBackend::RustCrypto] {
            let mut out = Vec::new();
            let options = DecryptOptions {
                aead,
                ..Default::default()
            };
            let result = stream::decrypt_with(&mut &message[..], &mut out, &options, |_| {
                Ok(DecryptionMaterials {
                    data_key: DataKey::new(dek.clone()),
                    authenticate_only_context: Default::default(),
                })
            });
            match (should_pass, result) {
                (true, Ok(_)) => {
                    let expected: String = case["plaintext-frames"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| f.as_str().unwrap())
                        .collect();
                    if out != expected.as_bytes() {
                        failures.push(format!("case {n} ({aead}): wrong plaintext"));
                    }
                }
                (true, Err(e)) => failures.push(format!("case {n} ({aead}): {e}")),
                (false, Ok(_)) => {
                    failures.push(format!("case {n} ({aead}): decrypted but must fail"))
                }
                (false, Err(Error::CommitmentMismatch)) => {
                    if aead == AeadBackend::Ring {
                        rejected.push(n);
                    }
                }
                (false, Err(e)) => failures.push(format!("case {n} ({aead}): wrong error: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(rejected, vec![2, 12, 13, 20, 21]);
}

#[test]
fn every_unsigned_vector_rewraps_to_a_new_key_v2_only_accepting_nonce_reuse_signed_never() {
    let (vectors, plaintext) = raw_aes_vectors();
    let new_key = common::raw_keyring("rewrap-test", "new", &[7u8; 32]);
    let rt = common::runtime();
    let options = legacy_options(AeadBackend::Ring);
    let (mut rewrapped, mut refused) = (BTreeSet::new(), BTreeSet::new());
    let mut failures = Vec::new();
    for RawAesVector {
        id,
        message,
        keyring: old_key,
        reproduced,
    } in &vectors
    {
        let (header, _) = stream::read_header(&mut &message[..], &options.limits).unwrap();
        let body = &message[header.to_bytes().len()..];
        for keep_existing in [false, true] {
            let rewrapper = Rewrapper::new(
                old_key.clone(),
                Some(new_key.clone()),
                KeepPolicy {
                    keep_existing,
                    drop: Vec::new(),
                },
                (16, Duration::from_secs(60)),
                Default::default(),
            );
            let suite = header.body.suite.known().unwrap();
            let v1 = suite.version == MessageVersion::V1;
            let r = rt.block_on(rewrapper.rewrap(&header.body, reproduced));
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{id}: {e}"));
                    continue;
                }
            };
            let edks = &r.encrypted_data_keys;
            // A v2 header's nonce is fixed: refused unless its reuse is accepted.
            let fresh = stream::rewrap_header(&header, &r.materials, edks, &options, Fresh);
            if !v1
                && suite.signature.is_none()
                && !matches!(fresh, Err(Error::HeaderNonceReuse { .. }))
            {
                failures.push(format!("{id}: v2 tagged again under its fixed nonce"));
            }
            let nonce = if v1 { Fresh } else { AllowReuse };
            let result = stream::rewrap_header(&header, &r.materials, edks, &options, nonce);
            let new_header = match (result, suite.signature) {
                (Ok(h), None) => h,
                (Err(Error::SignedMessage { .. }), Some(_)) => {
                    refused.insert(suite.id);
                    continue;
                }
                (other, _) => {
                    failures.push(format!("{id}: {:?}", other.map(|_| "rewrapped")));
                    continue;
                }
            };
            // A v1 header names its nonce: a fresh one, never the original's.
            let (rewritten, _) =
                stream::read_header(&mut &new_header[..], &options.limits).unwrap();
            if v1 && rewritten.auth.iv == header.auth.iv {
                failures.push(format!("{id}: v1 header tagged under its old nonce"));
            }
            let mut new_message = new_header.clone();
            new_message.extend_from_slice(body);
            // Only the new key is needed, and the old one works still exactly when kept.
            for (keyring, should_open) in [(&new_key, true), (old_key, keep_existing)] {
                match common::decrypt(keyring.as_ref(), reproduced, &options, &new_message) {
                    Ok((_, out)) if should_open && out == plaintext => {}
                    Err(_) if !should_open => {}
                    Ok(_) => failures.push(format!("{id}: opened when it must not, or wrongly")),
                    Err(e) => failures.push(format!("{id}: {e}")),
                }
            }
            rewrapped.insert(suite.id);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every unsigned suite of both versions, and every signed one refused.
    assert_eq!(
        rewrapped,
        BTreeSet::from([0x0014, 0x0046, 0x0078, 0x0114, 0x0146, 0x0178, 0x0478])
    );
    assert_eq!(refused, BTreeSet::from([0x0214, 0x0346, 0x0378, 0x0578]));
}
