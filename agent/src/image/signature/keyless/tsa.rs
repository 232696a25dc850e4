//! RFC 3161 timestamps (`timestampVerificationData.rfc3161Timestamps[].signedTimestamp`):
//! a TimeStampResp (or a bare token) whose CMS SignedData holds a TSTInfo. Verified when
//! the TSTInfo's message imprint is the hash of the signature bytes, the signed
//! attributes name that TSTInfo (content type and message digest), and their DER (as a
//! SET) verifies with the leaf of a timestamp authority of the trusted root that was
//! trusted at the time it states, whose chain holds at that time. The token's own
//! certificates are never trusted.

use der::asn1::{Any, ObjectIdentifier as Oid};
use der::{Decode, Encode, Tagged};

use super::root::CertAuthority;
use super::x509::{self, EKU_TIME_STAMPING, Hash, verify_ecdsa};
use super::{KeylessError, first_vouching, rfc3339};

const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
const CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
const MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
const CT_TSTINFO: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.4");

fn invalid(problem: &'static str) -> KeylessError {
    KeylessError::Timestamp { problem }
}

fn der_error(what: &'static str) -> impl Fn(der::Error) -> KeylessError {
    move |source| KeylessError::Der {
        what: format!("timestamp's {what}"),
        expected: "DER",
        source,
    }
}

fn hash_of(oid: &Oid) -> Result<Hash, KeylessError> {
    match *oid {
        SHA256 => Ok(Hash::Sha256),
        SHA384 => Ok(Hash::Sha384),
        other => Err(KeylessError::Algorithm {
            what: "timestamp's hash".into(),
            algorithm: other.to_string(),
        }),
    }
}

/// Verifies the timestamp token `token` ([`token_of`] a response) over `signature`
/// against `tsas`; returns its time.
pub(super) fn verify_token(
    token: &[u8],
    signature: &[u8],
    tsas: &[CertAuthority],
) -> Result<u64, KeylessError> {
    let info = cms::content_info::ContentInfo::from_der(token).map_err(der_error("token"))?;
    let signed: cms::signed_data::SignedData =
        info.content.decode_as().map_err(der_error("signed data"))?;
    let encap = &signed.encap_content_info;
    if encap.econtent_type != CT_TSTINFO {
        return Err(invalid("does not hold a TSTInfo"));
    }
    let content = encap
        .econtent
        .as_ref()
        .ok_or_else(|| invalid("has no content"))?;
    if content.tag() != der::Tag::OctetString {
        return Err(invalid("content is not an OCTET STRING"));
    }
    let tst = content.value();
    // TSTInfo: version, policy, messageImprint, serialNumber, genTime, …
    let fields: Vec<Any> = Vec::from_der(tst).map_err(der_error("TSTInfo"))?;
    let imprint: Vec<Any> = fields
        .get(2)
        .ok_or_else(|| invalid("has no message imprint"))?
        .decode_as()
        .map_err(der_error("message imprint"))?;
    let [alg, hashed] = imprint.as_slice() else {
        return Err(invalid("message imprint is not an algorithm and a hash"));
    };
    let alg: spki::AlgorithmIdentifierOwned =
        alg.decode_as().map_err(der_error("imprint algorithm"))?;
    if hashed.value() != hash_of(&alg.oid)?.digest(signature).as_slice() {
        return Err(KeylessError::Imprint);
    }
    let gen_time = fields
        .get(4)
        .filter(|t| t.tag() == der::Tag::GeneralizedTime)
        .ok_or_else(|| invalid("has no genTime"))?;
    let time =
        generalized_time(gen_time.value()).ok_or_else(|| invalid("genTime is not a UTC time"))?;
    let signer = signed
        .signer_infos
        .0
        .iter()
        .next()
        .ok_or_else(|| invalid("has no signer"))?;
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| invalid("has no signed attributes"))?;
    let digest = hash_of(&signer.digest_alg.oid)?.digest(tst);
    let (mut digest_ok, mut type_ok) = (false, false);
    for attr in attrs.iter() {
        let Some(v) = attr.values.iter().next() else {
            continue;
        };
        if attr.oid == MESSAGE_DIGEST {
            digest_ok = v.tag() == der::Tag::OctetString && v.value() == digest.as_slice();
        } else if attr.oid == CONTENT_TYPE {
            type_ok = v.decode_as::<Oid>().is_ok_and(|o| o == CT_TSTINFO);
        }
    }
    if !digest_ok || !type_ok {
        return Err(invalid(
            "signed attributes do not name its TSTInfo (content type and message digest)",
        ));
    }
    // Signed is the DER of the attributes as a SET (0x31), not their [0] form.
    let signed_attrs = attrs.to_der().map_err(der_error("signed attributes"))?;
    let hash = Hash::of_signature(&signer.signature_algorithm.oid, "timestamp's signature")?;
    let signature = signer.signature.as_bytes();
    first_vouching(tsas, |tsa| {
        verify_by(tsa, time, hash, &signed_attrs, signature)
    })
    .map(|_| time)
    .map_err(|rejections| KeylessError::NoTimestampAuthority {
        time: rfc3339(time),
        rejections,
    })
}

/// The token of a TimeStampResp `{status, token}` (status granted, 0 or 1), or `resp`
/// itself when it is a bare token.
pub(super) fn token_of(resp: &[u8]) -> Result<Vec<u8>, KeylessError> {
    let parts: Vec<Any> = Vec::from_der(resp).map_err(der_error("response"))?;
    match parts.as_slice() {
        [status, token]
            if status.tag() == der::Tag::Sequence && token.tag() == der::Tag::Sequence =>
        {
            let status: Vec<Any> = status.decode_as().map_err(der_error("status"))?;
            let granted: u8 = status
                .first()
                .ok_or_else(|| invalid("has no status"))?
                .decode_as()
                .map_err(der_error("status"))?;
            if granted > 1 {
                return Err(invalid("was not granted"));
            }
            token.to_der().map_err(der_error("token"))
        }
        _ => Ok(resp.to_vec()),
    }
}

fn verify_by(
    tsa: &CertAuthority,
    time: u64,
    hash: Hash,
    signed: &[u8],
    signature: &[u8],
) -> Result<(), KeylessError> {
    if !tsa.valid_for.contains(time) {
        return Err(KeylessError::AuthorityTime {
            time: rfc3339(time),
            valid_for: tsa.valid_for.to_string(),
        });
    }
    let (leaf, rest) = tsa
        .chain
        .split_first()
        .ok_or_else(|| invalid("authority has no certificate"))?;
    leaf.require_valid_at(time, "timestamp authority's certificate")?;
    leaf.require_usage(EKU_TIME_STAMPING, "timeStamping")?;
    verify_ecdsa(
        &leaf.spki()?,
        hash,
        signed,
        signature,
        "timestamp's signature",
    )?;
    let anchors = CertAuthority {
        uri: tsa.uri.clone(),
        chain: rest.to_vec(),
        valid_for: tsa.valid_for,
    };
    if !rest.is_empty() {
        x509::chain(leaf, std::slice::from_ref(&anchors), time)?;
    }
    Ok(())
}

/// `YYYYMMDDHHMMSS[.f*]Z` in seconds since the epoch (der's GeneralizedTime refuses
/// fractions, which some authorities write).
pub(super) fn generalized_time(v: &[u8]) -> Option<u64> {
    let t = std::str::from_utf8(v).ok()?;
    let t = t.strip_suffix('Z')?;
    let (whole, _fraction) = t.split_once('.').unwrap_or((t, ""));
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &whole[0..4],
        &whole[4..6],
        &whole[6..8],
        &whole[8..10],
        &whole[10..12],
        &whole[12..14]
    );
    humantime::parse_rfc3339(&text)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}
