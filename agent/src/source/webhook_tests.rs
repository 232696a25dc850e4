//! The receiver's checks: signatures against known vectors, ref matching, the rate
//! limits (pure); then the body cap, the limits and the trigger over loopback TCP.

use super::check::*;
use super::*;
use hyper::header::HeaderMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::mpsc::Receiver;

/// GitHub's documented example: this secret, body `Hello, World!`.
const DOC_SECRET: &str = "It's a Secret to Everybody";
const DOC_SIG: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
/// A push to `main`, and its signature under [`DOC_SECRET`], pinned with
/// `printf '%s' '{"ref":"refs/heads/main"}' | openssl dgst -sha256 -hmac "It's a Secret to Everybody"`.
const PUSH: &str = r#"{"ref":"refs/heads/main"}"#;
const PUSH_SIG: &str = "6a42699496d8c4fb346af1c930df527931a321e28ada69dbc5ee82f438517fd2";

fn secret() -> Secret {
    Secret::new(DOC_SECRET.as_bytes())
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.parse().expect("header value"));
    }
    h
}

fn main_branch() -> GitRef {
    GitRef::Branch("main".into())
}

fn status_of(v: &Verdict) -> Option<u16> {
    match v {
        Verdict::Refused { status, .. } => Some(status.as_u16()),
        _ => None,
    }
}

#[test]
fn github_signatures_are_checked_against_the_documented_vector() {
    let s = secret();
    let body = b"Hello, World!";
    let sig = format!("sha256={DOC_SIG}");
    let ok = authenticate(&headers(&[("x-hub-signature-256", &sig)]), body, &s);
    assert_eq!(ok, Ok(Forge::GitHub));
    // Upper-case hex is the same signature.
    let upper = format!("sha256={}", DOC_SIG.to_uppercase());
    assert!(authenticate(&headers(&[("x-hub-signature-256", &upper)]), body, &s).is_ok());
    // One digit changed, a shortened tag, another body, another secret, no prefix.
    let mut flipped = DOC_SIG.to_string();
    flipped.replace_range(0..1, "8");
    for (sig, body, key) in [
        (format!("sha256={flipped}"), &body[..], DOC_SECRET),
        (format!("sha256={}", &DOC_SIG[..62]), &body[..], DOC_SECRET),
        (
            format!("sha256={DOC_SIG}"),
            &b"Hello, World?"[..],
            DOC_SECRET,
        ),
        (format!("sha256={DOC_SIG}"), &body[..], "another secret"),
        (DOC_SIG.to_string(), &body[..], DOC_SECRET),
        ("sha256=zz".to_string(), &body[..], DOC_SECRET),
    ] {
        let v = authenticate(
            &headers(&[("x-hub-signature-256", &sig)]),
            body,
            &Secret::new(key.as_bytes()),
        )
        .expect_err(&sig);
        assert_eq!(status_of(&v), Some(401), "{sig}: {v:?}");
        // The refusal never repeats the signature.
        assert!(!format!("{v:?}").contains(&DOC_SIG[..16]), "{v:?}");
    }
}

#[test]
fn gitea_forgejo_and_gitlab_are_checked_and_anything_unsigned_is_refused() {
    let s = secret();
    let body = PUSH.as_bytes();
    assert_eq!(
        authenticate(&headers(&[("x-gitea-signature", PUSH_SIG)]), body, &s),
        Ok(Forge::Gitea)
    );
    // Forgejo sends both its own and Gitea's headers.
    let both = headers(&[
        ("x-forgejo-signature", PUSH_SIG),
        ("x-gitea-signature", PUSH_SIG),
    ]);
    assert_eq!(authenticate(&both, body, &s), Ok(Forge::Forgejo));
    let forged = headers(&[("x-gitea-signature", &PUSH_SIG.replace('6', "7"))]);
    assert_eq!(
        status_of(&authenticate(&forged, body, &s).expect_err("forged")),
        Some(401)
    );
    // GitLab: the token itself, compared whole.
    assert_eq!(
        authenticate(&headers(&[("x-gitlab-token", DOC_SECRET)]), body, &s),
        Ok(Forge::GitLab)
    );
    for wrong in [
        "It's a Secret",
        "It's a Secret to Everybody!",
        "it's a secret to everybody",
        "",
    ] {
        let v = authenticate(&headers(&[("x-gitlab-token", wrong)]), body, &s).expect_err(wrong);
        assert_eq!(status_of(&v), Some(401), "{wrong:?}");
        assert!(!format!("{v:?}").contains("Secret to"), "{v:?}");
    }
    // A GitLab token that is wrong is not saved by a good signature beside it.
    let mixed = headers(&[
        ("x-gitlab-token", "nope"),
        ("x-hub-signature-256", &format!("sha256={PUSH_SIG}")),
    ]);
    assert!(authenticate(&mixed, body, &s).is_err());
    let v = authenticate(&headers(&[("x-github-event", "push")]), body, &s).expect_err("unsigned");
    assert_eq!(status_of(&v), Some(401));
    assert!(format!("{v:?}").contains("unsigned"), "{v:?}");
}

#[test]
fn only_a_push_to_the_followed_ref_is_acted_on() {
    assert_eq!(followed(&main_branch(), "refs/heads/main"), Ok(()));
    for other in [
        "refs/heads/mainline",
        "refs/heads/feature/main",
        "refs/tags/main",
        "main",
    ] {
        assert!(followed(&main_branch(), other).is_err(), "{other}");
    }
    let tag = GitRef::Tag("v1.2".into());
    assert_eq!(followed(&tag, "refs/tags/v1.2"), Ok(()));
    assert!(followed(&tag, "refs/heads/v1.2").is_err());
    let pinned = GitRef::Commit("abc1234".into());
    let why = followed(&pinned, "refs/heads/main").expect_err("pinned");
    assert!(why.to_string().contains("never moves"), "{why}");

    let s = secret();
    let github = |event: &str| {
        headers(&[
            ("x-hub-signature-256", &format!("sha256={PUSH_SIG}")),
            ("x-github-event", event),
        ])
    };
    assert_eq!(
        judge(&github("push"), PUSH.as_bytes(), &s, &main_branch()),
        Verdict::Push {
            forge: Forge::GitHub,
            git_ref: "refs/heads/main".into()
        }
    );
    // A ping, another event, another branch, a pinned commit: ignored.
    for (h, r) in [
        (github("ping"), main_branch()),
        (github("issues"), main_branch()),
        (github("push"), GitRef::Branch("prod".into())),
        (github("push"), pinned.clone()),
        (
            headers(&[("x-hub-signature-256", &format!("sha256={PUSH_SIG}"))]),
            main_branch(),
        ),
    ] {
        let v = judge(&h, PUSH.as_bytes(), &s, &r);
        assert!(matches!(v, Verdict::Ignored(_)), "{h:?}: {v:?}");
    }
    let gitlab =
        |event: &str| headers(&[("x-gitlab-token", DOC_SECRET), ("x-gitlab-event", event)]);
    assert!(matches!(
        judge(&gitlab("Push Hook"), PUSH.as_bytes(), &s, &main_branch()),
        Verdict::Push {
            forge: Forge::GitLab,
            ..
        }
    ));
    let tag_push = br#"{"ref":"refs/tags/v1.2","object_kind":"tag_push"}"#;
    assert!(matches!(
        judge(&gitlab("Tag Push Hook"), tag_push, &s, &tag),
        Verdict::Push { .. }
    ));
    assert!(matches!(
        judge(
            &gitlab("Merge Request Hook"),
            PUSH.as_bytes(),
            &s,
            &main_branch()
        ),
        Verdict::Ignored(_)
    ));
    // Signed, a push, but no `ref`: a bad request.
    let v = judge(&gitlab("Push Hook"), b"{}", &s, &main_branch());
    assert_eq!(status_of(&v), Some(400), "{v:?}");
}

#[test]
fn the_request_bucket_allows_a_burst_then_one_a_second() {
    let t0 = Instant::now();
    let mut b = Bucket::new(REQUESTS_BURST, REQUESTS_PER_SECOND, t0);
    for i in 0..REQUESTS_BURST {
        assert!(b.take(t0), "request {i} of the burst");
    }
    assert!(!b.take(t0));
    assert!(!b.take(t0 + Duration::from_millis(900)));
    assert!(b.take(t0 + Duration::from_millis(1000)));
    assert!(!b.take(t0 + Duration::from_millis(1500)));
    // A long quiet time refills the burst, no more.
    let later = t0 + Duration::from_secs(3600);
    let taken = (0..100).filter(|_| b.take(later)).count();
    assert_eq!(taken, REQUESTS_BURST as usize);
}

#[test]
fn valid_pushes_fetch_at_most_once_a_second_and_none_is_dropped() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut p = Pacer::default();
    assert_eq!(p.admit(t0), Pace::Now);
    assert_eq!(p.admit(ms(200)), Pace::After(Duration::from_millis(800)));
    // The fetch due at 1 s covers a push made before it.
    assert_eq!(p.admit(ms(500)), Pace::Pending);
    assert_eq!(p.admit(ms(1100)), Pace::After(Duration::from_millis(900)));
    assert_eq!(p.admit(ms(3000)), Pace::Now);
}

#[test]
fn refusals_for_the_rate_are_logged_once_a_second_with_a_count() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut l = LogPacer::default();
    assert_eq!(l.admit(t0), Some(0));
    assert_eq!(l.admit(ms(10)), None);
    assert_eq!(l.admit(ms(999)), None);
    assert_eq!(l.admit(ms(1000)), Some(2));
    assert_eq!(l.admit(ms(5000)), Some(0));
}

#[test]
fn the_secret_file_loses_one_trailing_newline_and_is_never_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let load = |text: &[u8]| {
        let p = dir.path().join("secret");
        std::fs::write(&p, text).expect("write");
        Secret::load(&p)
    };
    assert_eq!(&*load(b"s3cret\n").expect("load").0, b"s3cret");
    assert_eq!(&*load(b"s3cret\r\n").expect("load").0, b"s3cret");
    assert_eq!(&*load(b"s3cret").expect("load").0, b"s3cret");
    assert_eq!(&*load(b"s3cret\n\n").expect("load").0, b"s3cret\n");
    let s = load(b"s3cret\n").expect("load");
    assert!(!format!("{s:?}").contains("s3cret"));
    let e = load(b"\n").expect_err("empty");
    assert!(matches!(e, WebhookError::EmptySecret { .. }), "{e}");
    let e = Secret::load(&dir.path().join("missing")).expect_err("missing");
    assert!(e.to_string().contains("source.webhook.secret_file"), "{e}");
}

/// A receiver on a loopback port following `main`, with the controller's channel.
struct Served {
    rt: tokio::runtime::Runtime,
    server: Option<WebhookServer>,
    rx: Receiver<Trigger>,
    handle: Handle,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start() -> Served {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret_file = dir.path().join("webhook.secret");
        std::fs::write(&secret_file, format!("{DOC_SECRET}\n")).expect("write");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (handle, rx) = crate::reconcile::controller::channel(dir.path(), Default::default());
        let webhook = Webhook {
            listen: "127.0.0.1:0".into(),
            secret_file,
        };
        let server = start(rt.handle(), handle.clone(), &webhook, &main_branch()).expect("start");
        Served {
            rt,
            server: Some(server),
            rx,
            handle,
            _dir: dir,
        }
    }

    /// Sends `head` (request line and headers, without the blank line) and `body`;
    /// the status and the answer's body.
    fn send(&self, head: &str, body: &[u8]) -> (u16, String) {
        self.send_from(Ipv4Addr::LOCALHOST, head, body)
    }

    /// [`Served::send`] from the loopback address `from` (any of 127.0.0.0/8).
    fn send_from(&self, from: Ipv4Addr, head: &str, body: &[u8]) -> (u16, String) {
        let mut c = self.connect_from(from);
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        c.write_all(format!("{head}\r\nHost: x\r\n\r\n").as_bytes())
            .expect("write head");
        // The server may answer and close before taking all of a refused body.
        let _ = c.write_all(body);
        // What came before a reset (the server closes with a refused body unread).
        let mut raw = Vec::new();
        let _ = c.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// A connection to the receiver from the loopback address `from`.
    fn connect_from(&self, from: Ipv4Addr) -> std::net::TcpStream {
        let addr = self.server.as_ref().expect("server").local_addr();
        let stream = self.rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind(SocketAddr::new(IpAddr::V4(from), 0))
                .expect("bind the source address");
            socket.connect(addr).await.expect("connect")
        });
        let c = stream.into_std().expect("std stream");
        c.set_nonblocking(false).expect("blocking");
        c
    }

    fn push(&self, sig: &str, body: &str) -> (u16, String) {
        self.push_from(Ipv4Addr::LOCALHOST, sig, body)
    }

    fn push_from(&self, from: Ipv4Addr, sig: &str, body: &str) -> (u16, String) {
        self.send_from(
            from,
            &format!(
                "POST {PATH} HTTP/1.1\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: sha256={sig}\r\nContent-Length: {}",
                body.len()
            ),
            body.as_bytes(),
        )
    }

    /// The triggers sent so far.
    fn triggers(&self) -> Vec<String> {
        self.rx
            .try_iter()
            .map(|t| match t {
                Trigger::SourceChanged(why) => why,
                other => format!("{other:?}"),
            })
            .collect()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _guard = self.rt.enter();
        self.server.take();
    }
}

#[test]
fn over_loopback_a_signed_push_triggers_a_fetch_and_refusals_trigger_none() {
    let s = Served::start();
    let (status, body) = s.push(PUSH_SIG, PUSH);
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("\"accepted\""), "{body}");
    assert_eq!(s.triggers(), ["webhook: push to refs/heads/main (github)"]);
    // Forged, unsigned, a GitLab token that is wrong: 401, no trigger.
    let forged = PUSH_SIG.replace('a', "b");
    assert_eq!(s.push(&forged, PUSH).0, 401);
    let len = PUSH.len();
    let unsigned = s.send(
        &format!("POST {PATH} HTTP/1.1\r\nX-GitHub-Event: push\r\nContent-Length: {len}"),
        PUSH.as_bytes(),
    );
    assert_eq!(unsigned.0, 401, "{}", unsigned.1);
    let gitlab = s.send(
        &format!("POST {PATH} HTTP/1.1\r\nX-Gitlab-Event: Push Hook\r\nX-Gitlab-Token: guess\r\nContent-Length: {len}"),
        PUSH.as_bytes(),
    );
    assert_eq!(gitlab.0, 401);
    // Elsewhere, or not a POST.
    assert_eq!(
        s.send("POST /hook HTTP/1.1\r\nContent-Length: 0", b"").0,
        404
    );
    assert_eq!(s.send(&format!("GET {PATH} HTTP/1.1"), b"").0, 405);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.triggers(), Vec::<String>::new());
}

#[test]
fn a_body_over_the_cap_is_refused_whether_declared_or_streamed() {
    let s = Served::start();
    let big = MAX_BODY + 1;
    let (status, body) = s.send(
        &format!("POST {PATH} HTTP/1.1\r\nX-Hub-Signature-256: sha256={PUSH_SIG}\r\nContent-Length: {big}"),
        b"{",
    );
    assert_eq!(status, 413, "{body}");
    // Chunked, with no length given: cut at the cap.
    let chunk = vec![b' '; 64 * 1024];
    let mut stream = Vec::new();
    for _ in 0..17 {
        stream.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        stream.extend_from_slice(&chunk);
        stream.extend_from_slice(b"\r\n");
    }
    stream.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = s.send(
        &format!("POST {PATH} HTTP/1.1\r\nX-Hub-Signature-256: sha256={PUSH_SIG}\r\nTransfer-Encoding: chunked"),
        &stream,
    );
    assert_eq!(status, 413, "{body}");
    // Just under the cap is read (and then judged: this one is not signed right).
    let padded = format!(
        "{PUSH}{}",
        " ".repeat(usize::try_from(MAX_BODY).expect("cap") - PUSH.len())
    );
    assert_eq!(s.push(PUSH_SIG, &padded).0, 401);
    assert_eq!(s.triggers(), Vec::<String>::new());
}

#[test]
fn a_flood_is_refused_per_peer_and_never_refuses_another_peer_s_signed_push() {
    let s = Served::start();
    // Signed pushes give their token back: more than a burst of them is accepted, and
    // paced to one fetch a second.
    let answers: Vec<u16> = (0..REQUESTS_BURST + 5)
        .map(|_| s.push(PUSH_SIG, PUSH).0)
        .collect();
    assert!(answers.iter().all(|c| *c == 202), "{answers:?}");
    assert_eq!(
        s.triggers().len(),
        1,
        "a fetch at once, the next one deferred"
    );
    // Another peer floods with forged pushes: its burst is judged (401), the rest
    // refused before any check, a push it signs as well.
    let flooder = Ipv4Addr::new(127, 0, 0, 2);
    let forged: Vec<u16> = (0..REQUESTS_BURST + 5)
        .map(|_| s.push_from(flooder, "00", PUSH).0)
        .collect();
    let burst = REQUESTS_BURST as usize;
    assert!(forged[..burst].iter().all(|c| *c == 401), "{forged:?}");
    assert!(forged[burst..].iter().all(|c| *c == 429), "{forged:?}");
    let (status, body) = s.push_from(flooder, PUSH_SIG, PUSH);
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("from this address"), "{body}");
    // The forge's push is not refused for it.
    assert_eq!(s.push(PUSH_SIG, PUSH).0, 202);
    // A peer's own unauthenticated requests count against it.
    for _ in 0..REQUESTS_BURST {
        assert_eq!(s.push("00", PUSH).0, 401);
    }
    assert_eq!(s.push(PUSH_SIG, PUSH).0, 429);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(s.push(PUSH_SIG, PUSH).0, 202, "refilled");
    assert!(!s.triggers().is_empty(), "the deferred fetch ran");
}

#[test]
fn peers_are_counted_apart_in_a_bounded_map() {
    let t0 = Instant::now();
    let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(192, 0, 2, n));
    let mut p = PeerBuckets::new(3, 2, 1);
    assert!(p.take(ip(1), t0) && p.take(ip(1), t0));
    assert!(!p.take(ip(1), t0), "peer 1 spent its burst");
    assert!(p.take(ip(2), t0), "peer 2 has its own");
    // An authenticated request gives its token back.
    p.refund(ip(1));
    assert!(p.take(ip(1), t0));
    assert!(!p.take(ip(1), t0));
    // At most 3 peers: a fourth forgets the one seen least recently (peer 2, at t0 + 0;
    // peer 1 and 3 came later), which starts afresh.
    let t1 = t0 + Duration::from_millis(10);
    assert!(!p.take(ip(1), t1));
    assert!(p.take(ip(3), t1));
    assert!(p.take(ip(4), t1));
    assert_eq!(p.tracked(), 3);
    assert!(!p.take(ip(1), t1), "peer 1 is still tracked, still spent");
    assert!(
        p.take(ip(2), t1) && p.take(ip(2), t1),
        "peer 2 was forgotten"
    );
    assert_eq!(p.tracked(), 3);
    // Many peers never grow the map past its bound.
    let mut big = PeerBuckets::new(MAX_PEERS, REQUESTS_BURST, REQUESTS_PER_SECOND);
    for n in 0..(MAX_PEERS as u32 * 3) {
        assert!(big.take(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)), t0));
    }
    assert_eq!(big.tracked(), MAX_PEERS);
}

#[test]
fn a_peer_is_an_ipv4_address_or_an_ipv6_64() {
    let v6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().expect("v6"));
    assert_eq!(peer_key(v6("2001:db8:1:2:aaaa::1")), v6("2001:db8:1:2::"));
    assert_eq!(
        peer_key(v6("2001:db8:1:2:ffff::9")),
        peer_key(v6("2001:db8:1:2::1"))
    );
    assert_ne!(
        peer_key(v6("2001:db8:1:3::1")),
        peer_key(v6("2001:db8:1:2::1"))
    );
    let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    assert_eq!(peer_key(v4), v4);
    assert_eq!(peer_key(v6("::ffff:192.0.2.7")), v4);
    // One host's /64 is one bucket.
    let t0 = Instant::now();
    let mut p = PeerBuckets::new(8, 1, 1);
    assert!(p.take(v6("2001:db8::1"), t0));
    assert!(!p.take(v6("2001:db8::2"), t0));
}

/// `payload=<the push, urlencoded>`, GitHub's default content type.
const FORM: &str = "payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D";
/// [`FORM`]'s signature as sent, pinned with
/// `printf '%s' "$FORM" | openssl dgst -sha256 -hmac "It's a Secret to Everybody"`.
const FORM_SIG: &str = "720493f557150a271b7cfdd9904c5fe4697f30c44588f8b452d36abc47b8796c";
const FORM_TYPE: &str = "application/x-www-form-urlencoded";

#[test]
fn a_form_body_is_read_through_its_payload_field() {
    let s = secret();
    assert_eq!(form_payload(FORM.as_bytes()).as_deref(), Some(PUSH));
    let sig = format!("sha256={FORM_SIG}");
    // GitHub signs the body as sent.
    let github = headers(&[
        ("content-type", FORM_TYPE),
        ("x-github-event", "push"),
        ("x-hub-signature-256", &sig),
    ]);
    assert!(
        matches!(judge(&github, FORM.as_bytes(), &s, &main_branch()), Verdict::Push { forge: Forge::GitHub, ref git_ref } if git_ref == "refs/heads/main")
    );
    // Gitea and Forgejo sign the JSON they put in the form.
    let gitea = headers(&[
        (
            "content-type",
            "Application/X-WWW-Form-Urlencoded; charset=utf-8",
        ),
        ("x-gitea-event", "push"),
        ("x-gitea-signature", PUSH_SIG),
    ]);
    assert!(matches!(
        judge(&gitea, FORM.as_bytes(), &s, &main_branch()),
        Verdict::Push {
            forge: Forge::Gitea,
            ..
        }
    ));
    // A signature of something else: refused; another ref in the form: ignored.
    let mut forged = github.clone();
    forged.insert(
        "x-hub-signature-256",
        format!("sha256={DOC_SIG}").parse().expect("v"),
    );
    assert_eq!(
        status_of(&judge(&forged, FORM.as_bytes(), &s, &main_branch())),
        Some(401)
    );
    let v = judge(&github, FORM.as_bytes(), &s, &GitRef::Branch("prod".into()));
    assert!(matches!(v, Verdict::Ignored(_)), "{v:?}");
    // The form is not read as JSON without its content type, nor JSON as a form.
    let untyped = headers(&[("x-github-event", "push"), ("x-hub-signature-256", &sig)]);
    assert_eq!(
        status_of(&judge(&untyped, FORM.as_bytes(), &s, &main_branch())),
        Some(400)
    );
    // A signed form with no `payload`: 400, saying which content type to set.
    let other = "ref=refs%2Fheads%2Fmain";
    let other_sig = {
        use hmac013::{KeyInit, Mac};
        let mut m = <hmac013::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(DOC_SECRET.as_bytes())
            .expect("key");
        m.update(other.as_bytes());
        format!("sha256={}", hex::encode(m.finalize().into_bytes()))
    };
    let h = headers(&[
        ("content-type", FORM_TYPE),
        ("x-github-event", "push"),
        ("x-hub-signature-256", &other_sig),
    ]);
    match judge(&h, other.as_bytes(), &s, &main_branch()) {
        Verdict::Refused { status, reason } => {
            assert_eq!(status.as_u16(), 400);
            assert!(
                reason.contains("content type to application/json"),
                "{reason}"
            );
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn over_loopback_a_form_push_triggers_a_fetch() {
    let s = Served::start();
    let (status, body) = s.send(
        &format!(
            "POST {PATH} HTTP/1.1\r\nContent-Type: {FORM_TYPE}\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: sha256={FORM_SIG}\r\nContent-Length: {}",
            FORM.len()
        ),
        FORM.as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(s.triggers(), ["webhook: push to refs/heads/main (github)"]);
}

#[test]
fn check_finds_a_secret_the_agent_would_refuse_without_showing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("webhook.secret");
    let config = format!(
        "[source]\nurl = \"https://h/r.git\"\n[source.webhook]\nlisten = \"127.0.0.1:9487\"\nsecret_file = \"{}\"\n",
        secret_file.display()
    );
    let cfg = NodeConfig::parse("node.toml", &config).expect("config");
    let check = || check_secret(&cfg, "node.toml");
    // Missing, a directory, empty: located errors naming the key.
    for (make, why) in [
        (None, "cannot read the webhook secret"),
        (Some(b"".as_slice()), "is empty"),
        (Some(b"\n".as_slice()), "is empty"),
    ] {
        if let Some(text) = make {
            std::fs::write(&secret_file, text).expect("write");
        }
        let d = check().expect(why);
        assert_eq!(
            (d.file.as_str(), d.line, d.key.as_deref()),
            ("node.toml", 5, Some("source.webhook.secret_file")),
            "{d}"
        );
        assert!(
            d.message.contains(why) && d.message.contains("refuses to start"),
            "{d}"
        );
    }
    std::fs::write(&secret_file, "s3cret\n").expect("write");
    assert!(check().is_none());
    std::fs::remove_file(&secret_file).expect("rm");
    std::fs::create_dir(&secret_file).expect("mkdir");
    let d = check().expect("a directory");
    assert!(d.message.contains("not a regular file"), "{d}");
    // No webhook, nothing to check.
    let plain =
        NodeConfig::parse("node.toml", "[source]\nurl = \"https://h/r.git\"\n").expect("config");
    assert!(check_secret(&plain, "node.toml").is_none());
}

#[test]
fn one_peer_holds_at_most_its_share_of_the_connections() {
    let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(192, 0, 2, n));
    let mut c = PeerConnections::new(2);
    assert!(c.open(ip(1)) && c.open(ip(1)));
    assert!(!c.open(ip(1)), "peer 1 has its 2");
    assert!(c.open(ip(2)), "peer 2 has its own");
    c.close(ip(1));
    assert!(c.open(ip(1)));
    for _ in 0..2 {
        c.close(ip(1));
    }
    c.close(ip(2));
    assert_eq!(c.peers(), 0, "peers without connections are forgotten");

    // Over loopback: a peer holding its connections open, silent, is refused one more,
    // and another peer's signed push is served meanwhile.
    let s = Served::start();
    let holder = Ipv4Addr::new(127, 0, 0, 3);
    let held: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS_PER_PEER)
        .map(|_| s.connect_from(holder))
        .collect();
    let mut extra = s.connect_from(holder);
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    // Closed at once, unanswered (not left waiting for its headers).
    let read = extra.read(&mut buf);
    assert!(matches!(read, Ok(0)), "{read:?}");
    assert_eq!(s.push(PUSH_SIG, PUSH).0, 202);
    // Once they close, the peer is served again.
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.push_from(holder, PUSH_SIG, PUSH).0, 202);
}

#[test]
fn connections_refused_before_a_request_is_answered_are_counted() {
    let s = Served::start();
    let count = |result: &str| {
        let text = s.handle.metrics().encode();
        let line = format!("berth_webhook_requests_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Not HTTP: hyper answers 400 before any handler runs.
    let mut c = s.connect_from(Ipv4Addr::LOCALHOST);
    c.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    c.write_all(b"\x16\x03\x01 not http\r\n\r\n")
        .expect("write");
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    assert!(
        raw.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    // An answered refusal is counted once.
    assert_eq!(s.send("GET /v1/webhook HTTP/1.1", b"").0, 405);
    let wait = |what: &str, want: u64| {
        for _ in 0..200 {
            if count(what) == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("{what}: {} counted, {want} expected", count(what));
    };
    wait("refused", 2);
    // One more than a peer's share of connections: closed unanswered, and counted.
    let holder = Ipv4Addr::new(127, 0, 0, 4);
    let held: Vec<std::net::TcpStream> = (0..=MAX_CONNECTIONS_PER_PEER)
        .map(|_| s.connect_from(holder))
        .collect();
    wait("throttled", 1);
    drop(held);
}
