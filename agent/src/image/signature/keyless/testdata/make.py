#!/usr/bin/env python3
"""Writes the forged keyless fixtures of this directory: a private Sigstore (a CA
standing in for Fulcio, a Rekor v1 log key, a real dsse entry with its signed entry
timestamp, an RFC 6962 inclusion proof and a signed checkpoint, and an `openssl ts`
timestamp authority), one directory per case, each with `bundle.json` and
`trusted_root.json`. Adapted from a review's forge.py. Run with Python and the
`cryptography` package, and `openssl` on PATH:

    python3 make.py            # rewrites every case; keys are new each run

The signing time T is the time of the run (openssl ts stamps the current time).
"""
import base64, datetime as dt, hashlib, json, os, shutil, subprocess, sys, tempfile, time
from cryptography import x509
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID, ObjectIdentifier
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

HERE = os.path.dirname(os.path.abspath(__file__))
T = int(time.time())
DIGEST = "a" * 64
ISSUER = "https://token.actions.githubusercontent.com"
SUBJECT = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1"

b64 = lambda b: base64.b64encode(b).decode()
def ts(t): return dt.datetime.fromtimestamp(t, dt.timezone.utc)
def rfc(t): return ts(t).strftime("%Y-%m-%dT%H:%M:%SZ")
def der_utf8(s): return tlv(0x0c, s.encode())
def der(c): return c.public_bytes(serialization.Encoding.DER)
def spki(k): return k.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

def der_len(n):
    if n < 128: return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b
def tlv(tag, body): return bytes([tag]) + der_len(len(body)) + body
def split_tlv(b):
    """(tag, content, rest) of the DER TLV at the start of b."""
    n = b[1]
    if n < 128: h, ln = 2, n
    else:
        k = n & 0x7f; h, ln = 2 + k, int.from_bytes(b[2:2 + k], "big")
    return b[0], b[h:h + ln], b[h + ln:]

def resign(cert, key, patch):
    """The certificate with `patch` applied to its tbsCertificate bytes, signed again
    by `key` (ECDSA SHA-384)."""
    _, outer, _ = split_tlv(der(cert))
    _, tbs, rest = split_tlv(outer)
    tbs = patch(tlv(0x30, tbs))
    _, alg, _ = split_tlv(rest)
    sig = key.sign(tbs, ec.ECDSA(hashes.SHA384()))
    return tbs + b"", tlv(0x30, tbs + tlv(0x30, alg) + tlv(0x03, b"\x00" + sig))

CA_KU = x509.KeyUsage(False, False, False, False, False, True, True, False, False)

def ca_cert(key, name, issuer_name, issuer_key, path_length=1, ku=CA_KU):
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(ts(T - 86400 * 365)).not_valid_after(ts(T + 86400 * 365))
         .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), True))
    if ku is not None:
        b = b.add_extension(ku, True)
    return b.sign(issuer_key, hashes.SHA384())

def make(case, san="uri", subject=SUBJECT, issuer_ext="v2", chain_field="certificate",
         tsa=False, rekor_v2=False, leaf_ca=False, intermediate=False, root_path_length=1,
         root_ku=CA_KU, extra_ext=None, dup_ext=False, tlog=True, promise=True):
    out = os.path.join(HERE, case)
    os.makedirs(out, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "berth-test"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "berth-test-fulcio")])
    ca = ca_cert(ca_key, ca_name, ca_name, ca_key, root_path_length, root_ku)
    chain = [ca]
    signer_key, signer_name = ca_key, ca_name
    if intermediate:
        int_key = ec.generate_private_key(ec.SECP384R1())
        int_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "berth-test-intermediate")])
        chain = [ca_cert(int_key, int_name, ca_name, ca_key, 0), ca]
        signer_key, signer_name = int_key, int_name
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    lb = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(signer_name)
          .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(ts(T - 60)).not_valid_after(ts(T + 540))
          .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), True)
          .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False))
    if leaf_ca:
        lb = lb.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    if san != "none":
        gn = {"uri": lambda: x509.UniformResourceIdentifier(subject),
              "email": lambda: x509.RFC822Name(subject),
              "othername": lambda: x509.OtherName(ObjectIdentifier("1.3.6.1.4.1.57264.1.7"), der_utf8(subject))}[san]()
        lb = lb.add_extension(x509.SubjectAlternativeName([gn]), True)
    if dup_ext:
        # An issuerAltName, renamed below into a second subjectAltName.
        lb = lb.add_extension(x509.IssuerAlternativeName([x509.UniformResourceIdentifier("https://github.com/evil/x")]), False)
    if issuer_ext in ("v1", "both"):
        lb = lb.add_extension(x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.57264.1.1"), ISSUER.encode()), False)
    if issuer_ext in ("v2", "both"):
        lb = lb.add_extension(x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.57264.1.8"), der_utf8(ISSUER)), False)
    if extra_ext:
        oid, value = extra_ext
        lb = lb.add_extension(x509.UnrecognizedExtension(ObjectIdentifier(oid), value), True)
    leaf = lb.sign(signer_key, hashes.SHA384())
    leaf_der = der(leaf)
    if dup_ext:
        _, leaf_der = resign(leaf, signer_key, lambda tbs: tbs.replace(b"\x06\x03\x55\x1d\x12", b"\x06\x03\x55\x1d\x11"))
    leaf = x509.load_der_x509_certificate(leaf_der)
    leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)

    stmt = json.dumps({"_type": "https://in-toto.io/Statement/v1",
                       "subject": [{"digest": {"sha256": DIGEST}}],
                       "predicateType": "https://sigstore.dev/cosign/sign/v1", "predicate": {}}).encode()
    ptype = "application/vnd.in-toto+json"
    pae = b"DSSEv1 %d %s %d " % (len(ptype), ptype.encode(), len(stmt)) + stmt
    sig = leaf_key.sign(pae, ec.ECDSA(hashes.SHA256()))

    if rekor_v2:
        log_key = ed25519.Ed25519PrivateKey.generate()
        details = "PKIX_ED25519"
        base_url = "https://log2025-test.rekor.example"
        body = json.dumps({"apiVersion": "0.0.2", "kind": "dsse", "spec": {"dsseV002": {
            "payloadHash": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(stmt).digest())},
            "signatures": [{"content": b64(sig), "verifier": {"keyDetails": "PKIX_ECDSA_P256_SHA_256",
                            "x509Certificate": {"rawBytes": b64(leaf_der)}}}]}}}, separators=(",", ":")).encode()
    else:
        log_key = ec.generate_private_key(ec.SECP256R1())
        details = "PKIX_ECDSA_P256_SHA_256"
        base_url = "https://rekor.berth-test.example"
        body = json.dumps({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": "00" * 32},
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(stmt).hexdigest()},
            "signatures": [{"signature": b64(sig), "verifier": b64(leaf_pem)}]}}, separators=(",", ":")).encode()
    log_spki = spki(log_key)
    log_id = hashlib.sha256(log_spki).digest()
    body_b64 = b64(body)
    log_index = 7
    # A tree of two leaves: ours at index 1, another at 0.
    other = hashlib.sha256(b"\x00other").digest()
    leaf_hash = hashlib.sha256(b"\x00" + body).digest()
    root_hash = hashlib.sha256(b"\x01" + other + leaf_hash).digest()
    origin = base_url.removeprefix("https://")
    note = "%s\n2\n%s\n" % (origin, b64(root_hash))
    if rekor_v2:
        cp_sig = log_key.sign(note.encode())
    else:
        cp_sig = log_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
    checkpoint = note + "\n\u2014 %s %s\n" % (origin, b64(log_id[:4] + cp_sig))
    entry = {"logIndex": str(log_index), "logId": {"keyId": b64(log_id)},
             "kindVersion": {"kind": "dsse", "version": "0.0.2" if rekor_v2 else "0.0.1"},
             "inclusionProof": {"logIndex": "1", "rootHash": b64(root_hash), "treeSize": "2",
                                "hashes": [b64(other)], "checkpoint": {"envelope": checkpoint}},
             "canonicalizedBody": body_b64}
    if not rekor_v2:
        entry["integratedTime"] = str(T)
        canon = '{"body":"%s","integratedTime":%d,"logID":"%s","logIndex":%d}' % (body_b64, T, log_id.hex(), log_index)
        if promise:
            entry["inclusionPromise"] = {"signedEntryTimestamp": b64(log_key.sign(canon.encode(), ec.ECDSA(hashes.SHA256())))}
    vm = {}
    if chain_field == "certificate":
        vm["certificate"] = {"rawBytes": b64(leaf_der)}
    else:
        vm["x509CertificateChain"] = {"certificates": [{"rawBytes": b64(c)} for c in [leaf_der] + [der(c) for c in chain]]}
    vm["tlogEntries"] = [entry] if tlog else []
    tsas = []
    if tsa:
        with tempfile.TemporaryDirectory() as d:
            tkey = ec.generate_private_key(ec.SECP256R1())
            tcert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "berth-test-tsa")]))
                     .issuer_name(ca_name).public_key(tkey.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(ts(T - 86400)).not_valid_after(ts(T + 86400 * 30))
                     .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), True)
                     .sign(ca_key, hashes.SHA384()))
            open(d + "/tsa.key", "wb").write(tkey.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            open(d + "/tsa.pem", "wb").write(tcert.public_bytes(serialization.Encoding.PEM))
            open(d + "/serial", "w").write("01\n")
            open(d + "/ts.cnf", "w").write(f"[tsa]\ndefault_tsa=t\n[t]\nserial={d}/serial\nsigner_digest=sha256\ndefault_policy=1.2.3.4\ndigests=sha256\ness_cert_id_alg=sha256\naccuracy=secs:1\n")
            subprocess.run(["openssl", "ts", "-query", "-digest", hashlib.sha256(sig).hexdigest(), "-sha256", "-cert", "-out", d + "/q.tsq"], check=True)
            subprocess.run(["openssl", "ts", "-reply", "-queryfile", d + "/q.tsq", "-inkey", d + "/tsa.key", "-signer", d + "/tsa.pem", "-config", d + "/ts.cnf", "-out", d + "/r.tsr"], check=True, stderr=subprocess.DEVNULL)
            vm["timestampVerificationData"] = {"rfc3161Timestamps": [{"signedTimestamp": b64(open(d + "/r.tsr", "rb").read())}]}
        tsas = [{"subject": {"commonName": "berth-test-tsa"}, "uri": "https://tsa.berth-test.example",
                 "certChain": {"certificates": [{"rawBytes": b64(der(tcert))}, {"rawBytes": b64(der(ca))}]},
                 "validFor": {"start": rfc(T - 86400)}}]
    bundle = {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial": vm,
              "dsseEnvelope": {"payload": b64(stmt), "payloadType": ptype, "signatures": [{"sig": b64(sig), "keyid": ""}]}}
    json.dump(bundle, open(os.path.join(out, "bundle.json"), "w"), indent=1)
    root = {"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{"baseUrl": base_url, "hashAlgorithm": "SHA2_256",
                       "publicKey": {"rawBytes": b64(log_spki), "keyDetails": details, "validFor": {"start": rfc(T - 86400)}},
                       "logId": {"keyId": b64(log_id)}}],
            "certificateAuthorities": [{"subject": {"organization": "berth-test", "commonName": "berth-test-fulcio"},
                                        "uri": "https://fulcio.berth-test.example",
                                        "certChain": {"certificates": [{"rawBytes": b64(der(c))} for c in chain]},
                                        "validFor": {"start": rfc(T - 86400 * 365)}}],
            "ctlogs": [], "timestampAuthorities": tsas}
    json.dump(root, open(os.path.join(out, "trusted_root.json"), "w"), indent=1)

CASES = {
    "uri": {},
    "email": {"san": "email", "subject": "release@acme.example"},
    "issuer-v1": {"issuer_ext": "v1"},
    "chain": {"chain_field": "x509CertificateChain", "intermediate": True},
    "tsa": {"tsa": True},
    "othername": {"san": "othername", "subject": "octocat"},
    "no-san": {"san": "none"},
    "rekor-v2": {"rekor_v2": True, "tsa": True},
    "no-promise": {"promise": False},
    "leaf-ca": {"leaf_ca": True},
    "path-length": {"intermediate": True, "root_path_length": 0},
    "no-key-cert-sign": {"root_ku": x509.KeyUsage(True, False, False, False, False, False, True, False, False)},
    "critical-unknown": {"extra_ext": ("1.3.6.1.4.1.99999.1", b"\x05\x00")},
    "precert-poison": {"extra_ext": ("1.3.6.1.4.1.11129.2.4.3", b"\x05\x00")},
    "duplicate-extension": {"dup_ext": True},
    "long-subject": {"san": "othername", "subject": "\x1b[31m" + "x" * 300},
}

if __name__ == "__main__":
    for case in sys.argv[1:] or CASES:
        make(case, **CASES[case])
    print("T =", T)
