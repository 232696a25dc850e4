//! The byte streams of a layer: compression detection, decompression, and the meter
//! that hashes the uncompressed bytes (the diff_id) and enforces the size limits.
//!
//! Contract: every uncompressed byte the tar reader sees goes through [`LayerStream`],
//! which hashes it and fails the read as soon as a limit is crossed; the limit that
//! tripped is recorded in the shared [`Meter`], so the caller can name it even when the
//! tar reader has wrapped the I/O error.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use super::Limits;
use super::error::LimitKind;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip, possibly several concatenated members (as pigz writes).
    Gzip,
    /// zstd, possibly several frames.
    Zstd,
}

impl Compression {
    /// The compression a layer media type declares; `None` for types berth does not
    /// know, which are then sniffed from the first bytes.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// The compression the magic bytes show (RFC 1952 gzip, RFC 8878 zstd), else tar.
    pub fn sniff(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Counters shared by the streams and the extraction loop.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    compressed: Cell<u64>,
    uncompressed: Cell<u64>,
    /// Uncompressed offset where the tar reader began looking for the next entry;
    /// while set, the bytes read are headers (PAX, GNU long names) held in memory.
    header_start: Cell<Option<u64>>,
    hit: Cell<Option<LimitKind>>,
}

impl Meter {
    pub(crate) fn begin_header(&self) {
        self.header_start.set(Some(self.uncompressed.get()));
    }
    pub(crate) fn end_header(&self) {
        self.header_start.set(None);
    }
    /// The limit that failed a read, if one did.
    pub(crate) fn hit(&self) -> Option<LimitKind> {
        self.hit.get()
    }
    pub(crate) fn compressed(&self) -> u64 {
        self.compressed.get()
    }
    pub(crate) fn uncompressed(&self) -> u64 {
        self.uncompressed.get()
    }
}

struct CountCompressed<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R: Read> Read for CountCompressed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let m = &self.meter.compressed;
        m.set(m.get().saturating_add(n as u64));
        Ok(n)
    }
}

/// The uncompressed tar stream: hashed, counted and limited.
pub(crate) struct LayerStream<'a> {
    inner: Box<dyn Read + 'a>,
    hasher: Sha256,
    meter: Rc<Meter>,
    limits: Limits,
    compression: Compression,
}

impl std::fmt::Debug for LayerStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerStream")
            .field("meter", &self.meter)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

/// Slack over `max_header_bytes` for the header blocks and padding read with them.
const HEADER_SLACK: u64 = 8 * 512;

impl<'a> LayerStream<'a> {
    /// Wraps `blob`, decompressing per `media_type` or, if that is unknown, per the
    /// magic bytes.
    pub(crate) fn open<R: Read + 'a>(
        blob: R,
        media_type: &str,
        limits: Limits,
        meter: Rc<Meter>,
    ) -> io::Result<LayerStream<'a>> {
        let mut counted = CountCompressed {
            inner: blob,
            meter: meter.clone(),
        };
        let compression = match Compression::from_media_type(media_type) {
            Some(c) => c,
            None => {
                let mut prefix = Vec::with_capacity(4);
                (&mut counted).take(4).read_to_end(&mut prefix)?;
                let c = Compression::sniff(&prefix);
                return Self::wrap(io::Cursor::new(prefix).chain(counted), c, limits, meter);
            }
        };
        Self::wrap(counted, compression, limits, meter)
    }

    fn wrap<R: Read + 'a>(
        raw: R,
        compression: Compression,
        limits: Limits,
        meter: Rc<Meter>,
    ) -> io::Result<LayerStream<'a>> {
        let inner: Box<dyn Read + 'a> = match compression {
            Compression::None => Box::new(raw),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(raw)?),
        };
        Ok(LayerStream {
            inner,
            hasher: Sha256::new(),
            meter,
            limits,
            compression,
        })
    }

    pub(crate) fn compression(&self) -> Compression {
        self.compression
    }

    /// `sha256:<hex>` of everything read so far.
    pub(crate) fn digest(&self) -> String {
        let sum = self.hasher.clone().finalize();
        let mut s = String::with_capacity(7 + 64);
        s.push_str("sha256:");
        for b in sum.iter() {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    fn check(&self, total: u64) -> Option<(LimitKind, u64)> {
        let l = &self.limits;
        if total > l.max_uncompressed_bytes {
            return Some((LimitKind::UncompressedBytes, l.max_uncompressed_bytes));
        }
        if self.compression != Compression::None
            && total > l.ratio_grace_bytes
            && total > self.meter.compressed.get().saturating_mul(l.max_ratio)
        {
            return Some((LimitKind::Ratio, l.max_ratio));
        }
        if let Some(start) = self.meter.header_start.get()
            && total - start > l.max_header_bytes.saturating_add(HEADER_SLACK)
        {
            return Some((LimitKind::HeaderBytes, l.max_header_bytes));
        }
        None
    }
}

impl Read for LayerStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        let total = self.meter.uncompressed.get().saturating_add(n as u64);
        self.meter.uncompressed.set(total);
        if let Some((kind, max)) = self.check(total) {
            self.meter.hit.set(Some(kind));
            return Err(io::Error::other(format!(
                "limit {kind} exceeded (limit {max})"
            )));
        }
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(
        blob: &[u8],
        media_type: &str,
        limits: Limits,
    ) -> (io::Result<Vec<u8>>, Rc<Meter>, String) {
        let meter = Rc::new(Meter::default());
        let mut s = LayerStream::open(blob, media_type, limits, meter.clone()).unwrap();
        let mut out = Vec::new();
        let r = s.read_to_end(&mut out).map(|_| out);
        (r, meter, s.digest())
    }

    #[test]
    fn media_types_and_magic() {
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type("application/octet-stream"),
            None
        );
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
        assert_eq!(Compression::sniff(b""), Compression::None);
    }

    #[test]
    fn sniffed_streams_decompress_and_hash_the_plain_bytes() {
        let plain = b"hello layer".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&plain[..], 1).unwrap();
        let (_, _, want) = read_all(&plain, "", Limits::default());
        for blob in [&plain[..], &gz[..], &zst[..]] {
            let (out, meter, digest) = read_all(blob, "unknown/type", Limits::default());
            assert_eq!(out.unwrap(), plain);
            assert_eq!(digest, want);
            assert_eq!(meter.compressed(), blob.len() as u64);
        }
        let (_, _, empty) = read_all(b"", "", Limits::default());
        assert_eq!(
            empty,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn ratio_limit_trips_on_a_zstd_bomb() {
        let zst = zstd::encode_all(&vec![0u8; 4 << 20][..], 3).unwrap();
        let limits = Limits {
            max_ratio: 100,
            ratio_grace_bytes: 1 << 20,
            ..Limits::default()
        };
        let (out, meter, _) = read_all(&zst, "application/vnd.oci.image.layer.v1.tar+zstd", limits);
        assert!(out.is_err());
        assert_eq!(meter.hit(), Some(LimitKind::Ratio));
    }
}
