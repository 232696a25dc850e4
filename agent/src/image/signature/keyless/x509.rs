//! Certificates: ECDSA signatures by a SubjectPublicKeyInfo (P-256 or P-384, SHA-256 or
//! SHA-384 as the signature algorithm says), a certificate chained to a certificate
//! authority of the trusted root at a given time, and the Fulcio identity of a leaf.
//!
//! The hash comes from the signature algorithm, the curve from the key: Fulcio's P-384
//! intermediate signs P-256 leaves with SHA-384, and the P-384 timestamp authority
//! signs with SHA-256. A child's signature is checked over its `tbsCertificate` bytes as
//! they are in the certificate (sliced, never re-encoded).

use der::asn1::ObjectIdentifier as Oid;
use der::oid::AssociatedOid;
use der::{Decode, Encode};
use sha2::{Digest, Sha256, Sha384};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName};

use super::root::CertAuthority;
use super::{KeylessError, first_vouching, rfc3339};

const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
pub(super) const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
pub(super) const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
pub(super) const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
/// Fulcio's OIDC issuer (v2): a DER UTF8String inside the extension value.
const OIDC_ISSUER_V2: Oid = Oid::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// Fulcio's OIDC issuer (v1, deprecated): the raw string bytes, no DER wrapper.
const OIDC_ISSUER_V1: Oid = Oid::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// Fulcio's username subject alternative name (an otherName holding a UTF8String).
const FULCIO_USERNAME: Oid = Oid::new_unwrap("1.3.6.1.4.1.57264.1.7");
/// The certificate-transparency poison of a precertificate (RFC 6962 §3.1).
const PRECERT_POISON: Oid = Oid::new_unwrap("1.3.6.1.4.1.11129.2.4.3");
/// Critical extensions berth processes or that constrain nothing it relies on: key
/// usage, subject alternative name, basic constraints, extended key usage, subject and
/// authority key identifiers.
const KNOWN_CRITICAL: [Oid; 6] = [
    Oid::new_unwrap("2.5.29.15"),
    Oid::new_unwrap("2.5.29.17"),
    Oid::new_unwrap("2.5.29.19"),
    Oid::new_unwrap("2.5.29.37"),
    Oid::new_unwrap("2.5.29.14"),
    Oid::new_unwrap("2.5.29.35"),
];
pub(super) const EKU_CODE_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.3");
pub(super) const EKU_TIME_STAMPING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.8");

/// The hash of an ECDSA signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hash {
    Sha256,
    Sha384,
}

impl Hash {
    /// The hash of signature algorithm `oid` (ecdsa-with-SHA256/384).
    pub(super) fn of_signature(oid: &Oid, what: &str) -> Result<Hash, KeylessError> {
        match *oid {
            ECDSA_SHA256 => Ok(Hash::Sha256),
            ECDSA_SHA384 => Ok(Hash::Sha384),
            other => Err(KeylessError::Algorithm {
                what: what.to_string(),
                algorithm: other.to_string(),
            }),
        }
    }

    /// The hash a key of this curve signs with when nothing says otherwise (DSSE).
    pub(super) fn of_key(spki_der: &[u8], what: &str) -> Result<Hash, KeylessError> {
        match curve(spki_der, what)? {
            P384 => Ok(Hash::Sha384),
            _ => Ok(Hash::Sha256),
        }
    }

    pub(super) fn digest(self, msg: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(msg).to_vec(),
            Hash::Sha384 => Sha384::digest(msg).to_vec(),
        }
    }
}

/// The named curve of an EC SubjectPublicKeyInfo; Ed25519 (Rekor v2 logs) and
/// anything else are refused by name.
fn curve(spki_der: &[u8], what: &str) -> Result<Oid, KeylessError> {
    let spki =
        spki::SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|source| KeylessError::Der {
            what: what.to_string(),
            expected: "SubjectPublicKeyInfo",
            source,
        })?;
    if spki.algorithm.oid == ED25519 {
        return Err(KeylessError::Algorithm {
            what: what.to_string(),
            algorithm: "Ed25519".into(),
        });
    }
    match spki.algorithm.parameters_oid() {
        Ok(c @ (P256 | P384)) => Ok(c),
        Ok(other) => Err(KeylessError::Algorithm {
            what: what.to_string(),
            algorithm: format!("the curve {other}"),
        }),
        Err(_) => Err(KeylessError::Algorithm {
            what: what.to_string(),
            algorithm: spki.algorithm.oid.to_string(),
        }),
    }
}

/// Verifies the DER ECDSA signature `sig` over `msg` hashed with `hash`, by the key
/// `spki_der` (P-256 or P-384). `what` names the signature in errors.
pub(super) fn verify_ecdsa(
    spki_der: &[u8],
    hash: Hash,
    msg: &[u8],
    sig: &[u8],
    what: &str,
) -> Result<(), KeylessError> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::pkcs8::DecodePublicKey;
    let prehash = hash.digest(msg);
    let key_error = |source: spki::Error| KeylessError::PublicKey {
        what: what.to_string(),
        source: Box::new(source),
    };
    let sig_error = |source| KeylessError::SignatureDer {
        what: what.to_string(),
        source,
    };
    let verified = match curve(spki_der, what)? {
        P384 => {
            let key =
                p384::ecdsa::VerifyingKey::from_public_key_der(spki_der).map_err(key_error)?;
            let sig = p384::ecdsa::Signature::from_der(sig).map_err(sig_error)?;
            key.verify_prehash(&prehash, &sig)
        }
        _ => {
            let key =
                p256::ecdsa::VerifyingKey::from_public_key_der(spki_der).map_err(key_error)?;
            let sig = p256::ecdsa::Signature::from_der(sig).map_err(sig_error)?;
            key.verify_prehash(&prehash, &sig)
        }
    };
    verified.map_err(|_| KeylessError::BadSignature {
        what: what.to_string(),
    })
}

/// A certificate with the DER it was parsed from.
#[derive(Debug, Clone)]
pub struct Cert {
    pub(super) der: Vec<u8>,
    pub(super) parsed: Certificate,
}

impl Cert {
    pub(super) fn parse(der: Vec<u8>, what: &str) -> Result<Cert, KeylessError> {
        let parsed = Certificate::from_der(&der).map_err(|source| KeylessError::Der {
            what: what.to_string(),
            expected: "X.509 certificate",
            source,
        })?;
        // RFC 5280 §4.2: an extension appears at most once; two subject alternative
        // names could otherwise be read differently by two verifiers.
        let mut seen = std::collections::BTreeSet::new();
        for ext in parsed.tbs_certificate().extensions().into_iter().flatten() {
            if !seen.insert(ext.extn_id) {
                return Err(KeylessError::DuplicateExtension {
                    what: what.to_string(),
                    oid: ext.extn_id.to_string(),
                });
            }
        }
        Ok(Cert { der, parsed })
    }

    /// The DER SubjectPublicKeyInfo.
    pub(super) fn spki(&self) -> Result<Vec<u8>, KeylessError> {
        self.parsed
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|source| KeylessError::Der {
                what: "certificate's public key".into(),
                expected: "SubjectPublicKeyInfo",
                source,
            })
    }

    /// notBefore and notAfter, in seconds since the epoch (both inclusive).
    pub(super) fn validity(&self) -> (u64, u64) {
        let v = self.parsed.tbs_certificate().validity();
        (
            v.not_before.to_unix_duration().as_secs(),
            v.not_after.to_unix_duration().as_secs(),
        )
    }

    /// The subject name (empty for Fulcio leaves), for messages.
    pub(super) fn subject_name(&self) -> String {
        self.parsed.tbs_certificate().subject().to_string()
    }

    /// Fails unless `t` is within the certificate's validity (bounds included).
    pub(super) fn require_valid_at(&self, t: u64, what: &str) -> Result<(), KeylessError> {
        let (not_before, not_after) = self.validity();
        if t < not_before || t > not_after {
            return Err(KeylessError::OutsideValidity {
                what: what.to_string(),
                time: rfc3339(t),
                not_before: rfc3339(not_before),
                not_after: rfc3339(not_after),
            });
        }
        Ok(())
    }

    /// The raw `tbsCertificate` bytes: the first element of the outer SEQUENCE.
    fn raw_tbs(&self) -> Result<&[u8], KeylessError> {
        let bad = || KeylessError::Der {
            what: "certificate".into(),
            expected: "DER SEQUENCE",
            source: der::Error::from(der::ErrorKind::Length {
                tag: der::Tag::Sequence,
            }),
        };
        let (header, _) = tlv_len(&self.der).ok_or_else(bad)?;
        let inner = self.der.get(header..).ok_or_else(bad)?;
        let (h2, l2) = tlv_len(inner).ok_or_else(bad)?;
        inner
            .get(..h2.checked_add(l2).ok_or_else(bad)?)
            .ok_or_else(bad)
    }

    /// Verifies that `issuer` signed this certificate (names and signature).
    pub(super) fn verify_issued_by(&self, issuer: &Cert) -> Result<(), KeylessError> {
        let tbs = self.parsed.tbs_certificate();
        if tbs.issuer() != issuer.parsed.tbs_certificate().subject() {
            return Err(KeylessError::IssuerName {
                issuer: super::shown(&tbs.issuer().to_string()),
                parent: super::shown(&issuer.subject_name()),
            });
        }
        let what = format!("signature of {} by {}", self.describe(), issuer.describe());
        let hash = Hash::of_signature(&self.parsed.signature_algorithm().oid, &what)?;
        let sig = self
            .parsed
            .signature()
            .as_bytes()
            .ok_or_else(|| KeylessError::BadSignature { what: what.clone() })?;
        verify_ecdsa(&issuer.spki()?, hash, self.raw_tbs()?, sig, &what)
    }

    fn describe(&self) -> String {
        let s = self.subject_name();
        if s.is_empty() {
            "the leaf certificate".to_string()
        } else {
            format!("`{}`", super::shown(&s))
        }
    }

    fn extensions(&self) -> impl Iterator<Item = &x509_cert::ext::Extension> {
        self.parsed
            .tbs_certificate()
            .extensions()
            .into_iter()
            .flatten()
    }

    fn extension<T: AssociatedOid + for<'a> Decode<'a, Error = der::Error>>(
        &self,
    ) -> Result<Option<T>, KeylessError> {
        for ext in self.extensions() {
            if ext.extn_id == T::OID {
                return T::from_der(ext.extn_value.as_bytes())
                    .map(Some)
                    .map_err(|source| KeylessError::Der {
                        what: format!("extension {} of {}", T::OID, self.describe()),
                        expected: "extension value",
                        source,
                    });
            }
        }
        Ok(None)
    }

    /// Fails unless the certificate is a CA (basicConstraints cA) that may sign
    /// certificates (keyUsage keyCertSign, when it has a keyUsage) with `below`
    /// intermediate CAs under it (pathLenConstraint).
    fn require_ca(&self, below: usize) -> Result<(), KeylessError> {
        let Some(b) = self.extension::<BasicConstraints>()?.filter(|b| b.ca) else {
            return Err(KeylessError::NotCa {
                certificate: self.describe(),
            });
        };
        if let Some(max) = b.path_len_constraint
            && below > usize::from(max)
        {
            return Err(KeylessError::PathLength {
                certificate: self.describe(),
                max,
                below,
            });
        }
        if let Some(usage) = self.extension::<KeyUsage>()?
            && !usage.key_cert_sign()
        {
            return Err(KeylessError::NoKeyCertSign {
                certificate: self.describe(),
            });
        }
        Ok(())
    }

    /// Fails when the certificate is a CA (a leaf signs, it does not issue).
    fn require_not_ca(&self) -> Result<(), KeylessError> {
        match self.extension::<BasicConstraints>()? {
            Some(b) if b.ca => Err(KeylessError::LeafIsCa {
                certificate: self.describe(),
            }),
            _ => Ok(()),
        }
    }

    /// Fails on a critical extension berth does not process (RFC 5280 §4.2), such as
    /// the certificate-transparency precertificate poison.
    fn require_known_critical(&self) -> Result<(), KeylessError> {
        for ext in self.extensions().filter(|e| e.critical) {
            if !KNOWN_CRITICAL.contains(&ext.extn_id) {
                return Err(KeylessError::CriticalExtension {
                    certificate: self.describe(),
                    oid: if ext.extn_id == PRECERT_POISON {
                        format!("{PRECERT_POISON} (a precertificate's poison)")
                    } else {
                        ext.extn_id.to_string()
                    },
                });
            }
        }
        Ok(())
    }

    /// Fails unless the certificate's extended key usage includes `usage`.
    pub(super) fn require_usage(&self, usage: Oid, name: &str) -> Result<(), KeylessError> {
        match self.extension::<ExtendedKeyUsage>()? {
            Some(e) if e.0.contains(&usage) => Ok(()),
            _ => Err(KeylessError::Usage {
                certificate: self.describe(),
                usage: name.to_string(),
            }),
        }
    }

    /// The Fulcio identity: the OIDC issuer (extension .1.8, else the older .1.1) and
    /// the subject alternative names (URIs, e-mail addresses and Fulcio usernames); a
    /// certificate with none of them names no identity and is refused.
    pub(super) fn identity(&self) -> Result<(String, Vec<String>), KeylessError> {
        let mut v2 = None;
        let mut v1 = None;
        let mut subjects = Vec::new();
        let bad = |what: &str, source: der::Error| KeylessError::Der {
            what: what.to_string(),
            expected: "UTF-8 string",
            source,
        };
        for ext in self.extensions() {
            let value = ext.extn_value.as_bytes();
            if ext.extn_id == OIDC_ISSUER_V2 {
                let s = der::asn1::Utf8StringRef::from_der(value)
                    .map_err(|e| bad("certificate's OIDC issuer (1.3.6.1.4.1.57264.1.8)", e))?;
                v2 = Some(s.as_str().to_string());
            } else if ext.extn_id == OIDC_ISSUER_V1 {
                v1 = Some(String::from_utf8_lossy(value).into_owned());
            } else if ext.extn_id == SubjectAltName::OID {
                let san = SubjectAltName::from_der(value)
                    .map_err(|e| bad("certificate's subject alternative name", e))?;
                for name in san.0 {
                    match name {
                        GeneralName::UniformResourceIdentifier(u) => {
                            subjects.push(u.as_str().to_string())
                        }
                        GeneralName::Rfc822Name(e) => subjects.push(e.as_str().to_string()),
                        // Fulcio's username SAN (cosign reads it as the subject too).
                        GeneralName::OtherName(o) if o.type_id == FULCIO_USERNAME => {
                            let u = o
                                .value
                                .decode_as::<der::asn1::Utf8StringRef<'_>>()
                                .map_err(|e| {
                                    bad("certificate's username (1.3.6.1.4.1.57264.1.7)", e)
                                })?;
                            subjects.push(u.as_str().to_string())
                        }
                        _ => {}
                    }
                }
            }
        }
        let issuer = v2.or(v1).ok_or(KeylessError::NoIssuer)?;
        if subjects.is_empty() {
            return Err(KeylessError::NoSubject { issuer });
        }
        Ok((issuer, subjects))
    }
}

/// (header length, content length) of the DER TLV at the start of `b`.
fn tlv_len(b: &[u8]) -> Option<(usize, usize)> {
    let first = *b.get(1)? as usize;
    if first < 0x80 {
        return Some((2, first));
    }
    let n = first & 0x7f;
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | *b.get(2 + i)? as usize;
    }
    Some((2 + n, len))
}

/// Chains `leaf` to one of `cas` at time `t`: the authority's `validFor` covers `t`,
/// each certificate of its chain (issuer first, root last) signed the one before,
/// names match, every one is a CA valid at `t`, and the last one is self-signed.
/// Returns the index of the authority.
pub(super) fn chain(leaf: &Cert, cas: &[CertAuthority], t: u64) -> Result<usize, KeylessError> {
    first_vouching(cas, |ca| chain_one(leaf, ca, t)).map_err(|rejections| KeylessError::NoChain {
        time: rfc3339(t),
        rejections,
    })
}

fn chain_one(leaf: &Cert, ca: &CertAuthority, t: u64) -> Result<(), KeylessError> {
    if !ca.valid_for.contains(t) {
        return Err(KeylessError::AuthorityTime {
            time: rfc3339(t),
            valid_for: ca.valid_for.to_string(),
        });
    }
    leaf.require_not_ca()?;
    leaf.require_known_critical()?;
    let mut child = leaf;
    for (below, parent) in ca.chain.iter().enumerate() {
        child.verify_issued_by(parent)?;
        parent.require_ca(below)?;
        parent.require_known_critical()?;
        parent.require_valid_at(t, &format!("certificate {}", parent.describe()))?;
        child = parent;
    }
    if child.parsed.tbs_certificate().issuer() == child.parsed.tbs_certificate().subject() {
        child.verify_issued_by(child)?;
    }
    Ok(())
}
