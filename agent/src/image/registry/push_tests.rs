//! Push and fetch against a real `docker-registry` on loopback (the fakes elsewhere
//! are matched by the e2e suite; `berth sign` pushes through this half).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::image::manifest::{MAX_MANIFEST_BYTES, OCI_MANIFEST};
use crate::image::registry::RegistryConfig;

/// The process, its address, and the storage dir (kept alive until drop).
struct Registry {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Option<Registry> {
    let binary = crate::testing::tool("docker-registry")?;
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
        dir.path().join("data").display()
    );
    std::fs::write(dir.path().join("config.yml"), config).unwrap();
    let child = Command::new(binary)
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Registry {
        child,
        addr,
        _data: dir,
    })
}

#[tokio::test]
async fn push_then_fetch_roundtrip() {
    let Some(reg) = start() else { return };
    let client = Client::new(RegistryConfig::new()).unwrap();
    let repo = Repository {
        registry: reg.addr.clone(),
        name: "push/test".into(),
    };
    let layer = Bytes::from_static(b"not really a tar, the registry does not care");
    let config = Bytes::from_static(br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#);
    let missing = Digest::of(b"never pushed");
    assert!(!client.blob_exists(&repo, &missing).await.unwrap());
    let l = client.push_blob(&repo, layer.clone()).await.unwrap();
    assert_eq!(
        client.push_blob(&repo, layer.clone()).await.unwrap(),
        l,
        "second push is a no-op"
    );
    let c = client.push_blob(&repo, config.clone()).await.unwrap();
    assert!(client.blob_exists(&repo, &l).await.unwrap());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{c}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{l}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let d = client
        .push_manifest(&repo, "v1", OCI_MANIFEST, Bytes::from(manifest.clone()))
        .await
        .unwrap();
    assert_eq!(d, Digest::of(manifest.as_bytes()));

    let by_tag = client.fetch_manifest(&repo, "v1").await.unwrap();
    assert_eq!(
        (by_tag.digest.clone(), by_tag.bytes.as_slice()),
        (d.clone(), manifest.as_bytes())
    );
    assert_eq!(by_tag.content_type.as_deref(), Some(OCI_MANIFEST));
    let by_digest = client.fetch_manifest(&repo, d.as_str()).await.unwrap();
    assert_eq!(by_digest.bytes, by_tag.bytes);
    assert_eq!(
        client
            .fetch_blob_bytes(&repo, &l, MAX_MANIFEST_BYTES)
            .await
            .unwrap(),
        layer
    );
    let err = client.fetch_blob_bytes(&repo, &l, 5).await.unwrap_err();
    let cause = std::error::Error::source(&err)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(cause.contains("more than the 5 bytes"), "{err}: {cause}");
    let err = client.fetch_manifest(&repo, "v2").await.unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("push/test"),
        "{err}"
    );
}
